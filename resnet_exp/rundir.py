"""One run folder, one type: its paths, its status, its meta.json and log.csv, its lock.

    <results>/<experiment>/<name>-s<seed>-<identity[:10]>/
        meta.json      resolved config, provenance, versions, status, wall time
        log.csv        one line per evaluation (rewritten atomically at each line)
        checkpoint.pt  model + optimizer + data-stream state at the last checkpoint
        model.pt       final weights (state_dict)

    <results>/.locks/<identity>.lock   held while a process trains that identity

The lock is keyed by the run's identity, not by its folder: the same run listed in two
experiment files (figure1/plain20 is figure6/plain20) is trained by one process only,
however many drivers are started. Locks are ``filelock`` locks (flock on POSIX): the
kernel releases them when the process dies, so a kill -9 never leaves a stale lock.

Everything that reads or writes a run folder goes through this class; nothing else
spells the file names or the status strings.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from .fileio import atomic_write_json, atomic_write_text

LOG_COLUMNS = ["iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
               "elapsed_s", "images_per_s"]
VAL_COLUMNS = ["val_loss", "val_error"]
TIMING_COLUMNS = frozenset({"elapsed_s", "images_per_s"})  # the only columns identical runs differ in


class RunStatus(str, enum.Enum):
    """What meta.json says of a run. ``str`` so that it is written to JSON as its value."""

    RUNNING = "running"          # a process is training it (or died doing so: see has_checkpoint)
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C / SIGTERM after a checkpoint: resumes
    FINISHED = "finished"
    DIVERGED = "diverged"        # the loss left the finite range: kept, not retried
    FAILED = "failed"            # an exception: retried by the next invocation

    @property
    def done(self) -> bool:
        """Nothing left to train: the planner skips it."""
        return self in (RunStatus.FINISHED, RunStatus.DIVERGED)


class LockHeld(RuntimeError):
    """Another process is training this identity."""


class RunDir:
    """A run's folder under ``<results>/<experiment>/``. Cheap to create: touches no file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_run(cls, results: str | Path, experiment: str, folder_name: str) -> "RunDir":
        return cls(Path(results) / experiment / folder_name)

    @classmethod
    def all_in(cls, results: str | Path) -> Iterator["RunDir"]:
        """Every run folder of a results tree (those with a meta.json), sorted."""
        for meta in sorted(Path(results).glob("*/*/meta.json")):
            yield cls(meta.parent)

    # ---- names
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def experiment(self) -> str:
        return self.path.parent.name

    @property
    def results(self) -> Path:
        return self.path.parent.parent

    @property
    def key(self) -> str:
        """``experiment/folder``: how reports and messages name a run."""
        return f"{self.experiment}/{self.name}"

    meta_path = property(lambda self: self.path / "meta.json")
    log_path = property(lambda self: self.path / "log.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    model_path = property(lambda self: self.path / "model.pt")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ---- meta.json
    def exists(self) -> bool:
        return self.meta_path.exists()

    def read_meta(self) -> dict[str, Any] | None:
        """meta.json as a dict; None when it is missing or not JSON."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_path, meta)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = {**(self.read_meta() or {}), **fields}
        self.write_meta(meta)
        return meta

    def status(self, identity: str | None = None) -> RunStatus | None:
        """The status meta.json records; None when there is none, or when ``identity``
        is given and the folder holds another run."""
        meta = self.read_meta() or {}
        if identity is not None and meta.get("identity") != identity:
            return None
        try:
            return RunStatus(meta.get("status"))
        except ValueError:
            return None

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    # ---- log.csv
    def read_log(self) -> list[dict[str, str]]:
        if not self.log_path.exists():
            return []
        with open(self.log_path, newline="") as f:
            return list(csv.DictReader(f))

    def write_log(self, rows: list[dict[str, Any]], columns: list[str]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.log_path, buf.getvalue())

    def last_logged_iteration(self) -> int:
        rows = self.read_log()
        try:
            return int(rows[-1]["iteration"]) if rows else 0
        except (KeyError, ValueError):
            return 0

    # ---- copying a finished run (the same identity in another experiment file)
    def copy_from(self, source: "RunDir") -> dict[str, Any]:
        """Make this folder a copy of the finished ``source``, recorded in meta.json."""
        shutil.copytree(source.path, self.path, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.tmp", "checkpoint.pt"))
        meta = self.read_meta() or {}
        meta["copied_from"] = source.key
        meta["config"] = {**meta.get("config", {}), "experiment": self.experiment}
        self.write_meta(meta)
        return meta

    # ---- lock
    def lock(self, identity: str) -> "IdentityLock":
        return IdentityLock(self.results, identity)


class IdentityLock:
    """A non-blocking exclusive lock on one run identity within a results tree.

    ``with lock:`` acquires it or raises :class:`LockHeld` at once; it never waits."""

    def __init__(self, results: str | Path, identity: str) -> None:
        self.path = Path(results) / ".locks" / f"{identity}.lock"
        self._lock = FileLock(self.path, timeout=0)

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release(force=True)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def __enter__(self) -> "IdentityLock":
        if not self.acquire():
            raise LockHeld(f"{self.path}: another process is training this run")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
