"""One run folder, one type: its paths, its status, its meta.json and log.csv, its lock.

    <results>/<experiment>/<name>-s<seed>-<identity[:10]>/
        meta.json      resolved config, provenance, versions, status, wall time
        log.csv        one line per evaluation (rewritten atomically at each line)
        checkpoint.pt  model + optimizer + data-stream state at the last checkpoint
        model.pt       final weights (state_dict); a published reference below the paper's
                       schedule leaves it out, its sha256 and size kept in meta.json's
                       ``published_without`` (publish_results)
        mean.pt        the per-pixel training mean the run subtracted (for Figure 7 later)
        responses.csv  std of every 3x3 layer's response on the test set (Figure 7)
        signals.csv    per-layer gradient norms, weight norms and forward signals during
                       training (signals.py)

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
import hashlib
import io
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from ..fileio import atomic_write_json, atomic_write_text

LOG_COLUMNS = ["iteration", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
               "elapsed_s", "images_per_s"]
VAL_COLUMNS = ["val_loss", "val_error"]
# <results>/.left-out.json: what the last invocation left out on purpose (runner.record_left_out)
LEFT_OUT_FILE = ".left-out.json"
# <results>/.selected.json: every run any invocation that wrote here selected (runner.record_selected);
# the reports list as missing only those, never a run nobody asked this folder for
SELECTED_FILE = ".selected.json"
PROGRESS_FILE = "progress.jsonl"  # the job's events, a JSON line each (runs/executing/progress.py); read by `summary`
TIMING_COLUMNS = frozenset({"elapsed_s", "images_per_s"})  # the only columns identical runs differ in
# A reference of the paper's full schedule keeps its final weights (worth loading); one of a
# compressed rung is published light: no report reads model.pt once Figure 7's responses are
# computed, and the weights were 311 MB of the 360 MB the references once held.
FULL_SCHEDULE_ITERATIONS = 64_000


CHECKOUT = Path(__file__).resolve().parents[2]  # the repository (ladder.REPO): committed references live in it


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


RETRAIN_HINT = "rerun with --retrain-damaged: the folder is moved aside (kept) and the run trained again"


@dataclass(frozen=True)
class Health:
    """What ``RunDir.check`` found: no problems, or what is wrong and how to fix it."""

    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        return "ok" if self.ok else "; ".join(self.problems)


def run_label(experiment: str, name: str, seed: object) -> str:
    """How the records (.left-out.json, .selected.json) and the reports name a run."""
    return f"{experiment}/{name} (seed {seed})"


def sha256_file(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def schedule(iterations: int, eval_every: int) -> list[int]:
    """The iterations a complete log has lines for."""
    its = list(range(eval_every, iterations + 1, eval_every))
    return its if its and its[-1] == iterations else its + [iterations]


# signals.csv's points (runs/training/signals.py writes it): every evaluation, and more early
# on, where the picture moves fastest. Here, beside the log's schedule, because the plan's
# estimate counts them too and planning may not import the training loop.
EARLY_POINTS = (0, 10, 50, 100, 200)
PROBE_SIZE = 256  # images a layer-signal measurement runs on: two of the paper's batches


def signal_points(iterations: int, eval_every: int) -> list[int]:
    """The iterations at which a run records its layer signals."""
    return sorted({p for p in EARLY_POINTS if p <= iterations} | set(schedule(iterations, eval_every)))


def probe_size_for(batch_size: int) -> int:
    """Two of the recipe's batches, at most ``PROBE_SIZE``: 256 for the paper's batch of 128, so
    a measurement costs about two training steps whatever the recipe."""
    return min(PROBE_SIZE, 2 * batch_size)


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
        """Every run folder of a results tree, sorted: each ``<experiment>/<run>`` folder
        holding any run file (one that lost its meta.json too: the check calls it damaged);
        not the hidden folders (.locks, .stop, .damaged, ...)."""
        for path in sorted(p for p in Path(results).glob("*/*") if p.is_dir()):
            if path.parent.name.startswith(".") or path.name.startswith("."):
                continue
            run = cls(path)
            if run.holds_run_files():
                yield run

    def holds_run_files(self) -> bool:
        """A folder with none of these (killed before its first write) is simply new."""
        return any(p.exists() for p in (self.meta_path, self.log_path, self.checkpoint_path, self.model_path))

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
    def shown(self) -> str:
        """The folder as a reader should see it: relative to the checkout when inside it (a
        committed reference's run: ``reports/reference/quick64/results/figure6/resnet20-s1-...``,
        the same on every machine), else as it is."""
        p = self.path.resolve()
        return str(p.relative_to(CHECKOUT)) if p.is_relative_to(CHECKOUT) else str(self.path)

    @property
    def key(self) -> str:
        """``experiment/folder``: how reports and messages name a run."""
        return f"{self.experiment}/{self.name}"

    meta_path = property(lambda self: self.path / "meta.json")
    log_path = property(lambda self: self.path / "log.csv")
    checkpoint_path = property(lambda self: self.path / "checkpoint.pt")
    model_path = property(lambda self: self.path / "model.pt")
    mean_path = property(lambda self: self.path / "mean.pt")            # the per-pixel mean it trained with
    responses_path = property(lambda self: self.path / "responses.csv")  # Figure 7 (responses.py)
    signals_path = property(lambda self: self.path / "signals.csv")      # layer signals (signals.py)

    def plugin_path(self, file_name: str) -> Path:
        """The copy of a plug-in's source this run trained (models/plugins.py): kept, never imported;
        a file at the folder's top, like every file a run writes (Ray sends those between nodes)."""
        return self.path / f"plugin-{file_name}"

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

    def published_without(self, meta: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """The files a publication left out on purpose, each with the sha256 and size it had
        (``{"model.pt": {"sha256": ..., "bytes": ...}}``); empty for a run as trained."""
        left = (meta if meta is not None else self.read_meta() or {}).get("published_without")
        return {k: v for k, v in left.items() if isinstance(v, dict)} if isinstance(left, dict) else {}

    def model_sha256(self) -> str | None:
        """The sha256 of the run's final weights: of model.pt, or the one recorded when a
        publication left model.pt out (Figure 7's responses name the weights they came from)."""
        if self.model_path.exists():
            return sha256_file(self.model_path)
        return self.published_without().get(self.model_path.name, {}).get("sha256")

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

    def read_signals(self) -> list[dict[str, Any]]:
        """signals.csv's rows as numbers (runs/training/signals.py writes it); empty when there is none
        or it does not parse."""
        try:
            with open(self.signals_path, newline="") as f:
                return [{"iteration": int(r["iteration"]), "layer": int(r["layer"]), "name": r["name"],
                         **{k: float(r[k]) for k in ("grad_norm", "weight_norm", "response_std")}}
                        for r in csv.DictReader(f)]
        except (OSError, KeyError, ValueError, TypeError, csv.Error):
            return []

    def last_logged_iteration(self) -> int:
        rows = self.read_log()
        try:
            return int(rows[-1]["iteration"]) if rows else 0
        except (KeyError, ValueError):
            return 0

    def log_prefix(self, iteration: int) -> bytes | None:
        """The bytes of log.csv up to the line of ``iteration`` (header included): what a
        checkpoint at ``iteration`` covers. None when the log is unreadable."""
        return _csv_prefix(self.log_path, lambda it: it <= iteration)

    def signals_prefix(self, iteration: int) -> bytes | None:
        """The bytes of signals.csv before ``iteration`` (a checkpoint at ``iteration`` is
        written before that point's signals are recorded)."""
        return _csv_prefix(self.signals_path, lambda it: it < iteration)

    # ---- integrity
    def check(self) -> Health:
        """Do meta.json, log.csv, model.pt and the checkpoint agree? Cheap: reads the small
        files and hashes the others; never unpickles anything."""
        meta = self.read_meta()
        if meta is None:
            return Health(("meta.json is missing or not JSON",))
        problems: list[str] = []
        try:
            status = RunStatus(meta.get("status"))
            recipe = meta["config"]["recipe"]
            iterations, eval_every = int(recipe["iterations"]), int(recipe["eval_every"])
            at = int(meta.get("iteration") or 0)
            if not isinstance(meta.get("identity"), str):
                raise KeyError("identity")
        except (ValueError, KeyError, TypeError) as e:
            return Health((f"meta.json lacks a valid {e} (status, identity, config.recipe)",))

        rows, log_problem = self._parsed_log()
        if log_problem:
            problems.append(log_problem)
        logged = [r["iteration"] for r in rows]
        expected = schedule(iterations, eval_every)
        files = meta.get("files") or {}
        if status == RunStatus.FINISHED:
            if logged != expected:
                problems.append(f"log.csv has {len(logged)} of the {len(expected)} lines of a finished run "
                                f"(last iteration {logged[-1] if logged else 'none'}, expected {iterations})")
            if at != iterations:
                problems.append(f"meta.json says iteration {at}, the recipe {iterations}")
            if not self.model_path.exists() and self.model_path.name not in self.published_without(meta):
                problems.append("model.pt (the final weights) is missing")
            for name, sha in files.items():  # every results file the run recorded a checksum of
                if not self.path.joinpath(name).exists():
                    problems.append(f"{name} is missing")
                elif sha256_file(self.path / name) != sha:
                    problems.append(f"{name} is not the file the run wrote (its sha256 differs)")
            final = meta.get("final") or {}
            if rows and not log_problem and any(
                    not _same(final.get(k), rows[-1].get(k)) for k in ("train_error", "test_error")):
                problems.append("meta.json's final errors differ from the log's last line")
        elif status == RunStatus.DIVERGED:
            if logged != expected[:len(logged)] or not logged or logged[-1] != at:
                problems.append(f"log.csv of a diverged run should end at iteration {at} with no gap")
        else:  # running, interrupted, failed: resumable if the log covers the checkpoint
            if logged[:len(expected)] != expected[:len(logged)]:
                problems.append("log.csv has gaps or lines out of order")
            covered = [i for i in expected if i <= at]
            if self.has_checkpoint() and logged[:len(covered)] != covered:
                problems.append(f"log.csv lacks lines the checkpoint (iteration {at}) covers: a resume would "
                                "leave a gap")
            prefix_sha = files.get("log_prefix")
            if self.has_checkpoint() and prefix_sha and not log_problem:
                prefix = self.log_prefix(at)
                if prefix is None or hashlib.sha256(prefix).hexdigest() != prefix_sha:
                    problems.append(f"log.csv up to iteration {at} is not what the run wrote (sha256 differs)")
            signals_sha = files.get("signals_prefix")
            if self.has_checkpoint() and signals_sha:
                prefix = self.signals_prefix(at)
                if prefix is None or hashlib.sha256(prefix).hexdigest() != signals_sha:
                    problems.append(f"signals.csv before iteration {at} is not what the run wrote (sha256 differs)")
        return Health(tuple(problems))

    def _parsed_log(self) -> tuple[list[dict[str, float]], str | None]:
        """The log's rows as numbers, or the first thing wrong with it."""
        try:
            with open(self.log_path, newline="") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                raw = list(reader)
        except FileNotFoundError:
            return [], None
        except (OSError, csv.Error, UnicodeDecodeError) as e:
            return [], f"log.csv is unreadable ({type(e).__name__}: {e})"
        if missing := [c for c in LOG_COLUMNS if c not in header]:
            return [], f"log.csv lacks the column(s) {', '.join(missing)}"
        rows = []
        for n, r in enumerate(raw, start=2):
            try:
                row = {c: float(r[c]) for c in header if c in LOG_COLUMNS or c in VAL_COLUMNS}
                if None in r or not float(r["iteration"]).is_integer():
                    raise ValueError("stray field")
                row["iteration"] = int(row["iteration"])
            except (TypeError, ValueError):
                return [], f"log.csv line {n} does not parse"
            rows.append(row)
        logged = [r["iteration"] for r in rows]
        if logged != sorted(set(logged)):
            return rows, "log.csv iterations are not increasing"
        return rows, None

    def move_aside(self) -> Path:
        """Move a damaged folder to ``<results>/.damaged/<experiment>/<name>.<n>`` (kept,
        out of the reports' sight) and return where it went."""
        base = self.results / ".damaged" / self.experiment
        base.mkdir(parents=True, exist_ok=True)
        n = 1
        while (base / f"{self.name}.{n}").exists():
            n += 1
        target = base / f"{self.name}.{n}"
        shutil.move(str(self.path), str(target))
        return target

    # ---- copying a finished run (the same identity in another experiment file)
    def copy_from(self, source: "RunDir", config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make this folder a copy of the finished ``source``, recorded in meta.json. The same
        identity means the same recipe, model and seed, but the copy is a row of its own
        experiment: ``config`` (its spec's) gives it its own name, group, baseline and sweep."""
        shutil.copytree(source.path, self.path, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.tmp", "checkpoint.pt"))
        meta = self.read_meta() or {}
        # a run of this folder by its key; one from elsewhere (a committed reference) by its path
        meta["copied_from"] = source.key if source.results.resolve() == self.results.resolve() else source.shown
        meta["config"] = {**meta.get("config", {}), **(config or {}), "experiment": self.experiment}
        self.write_meta(meta)
        return meta

    # ---- lock
    def lock(self, identity: str) -> "IdentityLock":
        return IdentityLock(self.results, identity)


def publish_results(source: str | Path, dest: str | Path, only_done: bool = False,
                    weights: bool | None = None) -> int:
    """Copy every run folder's results (meta.json, log.csv, signals.csv, responses.csv, ...; no
    checkpoint, lock or temporary file) from one results tree to another: what a committed
    reference reproduction keeps. The dataset's path in meta.json keeps only its file name
    (the sha256 identifies it; no machine's folders in a committed file). Returns the number
    of runs copied. ``only_done`` leaves out the runs still to train: a diverged run is done
    and goes with the finished ones (the remedies page reports a net that diverges at the
    recipe's learning rate; leaving it out would list it as missing, as if it had not been
    tried). The records of the runs selected and of those left out on purpose go with them
    (the reports list as missing only a selected run, and count those left out on one line),
    merged with the destination's: runs published into a reference that has some add to it.

    ``weights``: copy model.pt too. By default only for a run of the paper's full schedule;
    a compressed rung's run is published light, model.pt's sha256 and size kept in
    meta.json's ``published_without`` (``RunDir.check`` reads such a run as finished)."""
    n = 0
    _merge_records(Path(source), Path(dest))
    for run in RunDir.all_in(source):
        status = run.status()
        if only_done and not (status and status.done):
            continue
        meta = run.read_meta() or {}
        keep_weights = weights if weights is not None else _full_schedule(meta)
        target = RunDir.for_run(dest, run.experiment, run.name)
        target.path.mkdir(parents=True, exist_ok=True)
        for f in (run.log_path, run.model_path if keep_weights else None, run.mean_path, run.responses_path,
                  run.signals_path, *sorted(run.path.glob("plugin-*.py"))):
            if f is not None and f.exists():
                shutil.copy2(f, target.path / f.name)
        if not keep_weights:
            meta = _without_weights(meta, run.model_path)
        if isinstance((meta.get("dataset") or {}).get("path"), str):
            meta["dataset"]["path"] = Path(meta["dataset"]["path"]).name
        target.write_meta(meta)
        n += 1
    return n


def read_run_record(folder: str | Path, record: str) -> tuple[set[str], dict[str, Any]]:
    """A results folder's ``.selected.json`` or ``.left-out.json``: (its run labels, the whole
    record); an absent or unreadable record reads as none, ({}, {})."""
    try:
        doc = json.loads((Path(folder) / record).read_text())
        if not isinstance(doc["runs"], list):
            raise TypeError("runs is not a list")
        return {str(r) for r in doc["runs"]}, doc
    except (OSError, ValueError, KeyError, TypeError):
        return set(), {}


def _merge_records(source: Path, dest: Path) -> None:
    """``.selected.json`` and ``.left-out.json`` of ``source`` into ``dest``'s: the selected runs
    are the union; a run left out is one that some invocation left out and none selected."""
    (sel_src, _), (sel_dst, _) = read_run_record(source, SELECTED_FILE), read_run_record(dest, SELECTED_FILE)
    (out_src, doc_src), (out_dst, doc_dst) = read_run_record(source, LEFT_OUT_FILE), read_run_record(dest, LEFT_OUT_FILE)
    selected = sel_src | sel_dst
    if selected or doc_src or doc_dst:
        dest.mkdir(parents=True, exist_ok=True)
    if selected:
        atomic_write_json(dest / SELECTED_FILE, {"runs": sorted(selected)})
    if doc_src or doc_dst:
        atomic_write_json(dest / LEFT_OUT_FILE, {"runs": sorted((out_src | out_dst) - selected),
                                                 "hint": doc_dst.get("hint") or doc_src.get("hint") or ""})


def lighten(run: RunDir) -> bool:
    """Make a published run light in place: model.pt removed, its sha256 and size moved to
    meta.json's ``published_without``. meta.json is written first, so a stop between the
    two writes leaves a finished run whose weights are merely still there. Returns whether
    there was anything to remove (a run without model.pt, or of the full schedule, is left)."""
    meta = run.read_meta()
    if meta is None or not run.model_path.exists() or _full_schedule(meta):
        return False
    run.write_meta(_without_weights(meta, run.model_path))
    run.model_path.unlink()
    return True


def _full_schedule(meta: dict[str, Any]) -> bool:
    try:
        return int(meta["config"]["recipe"]["iterations"]) >= FULL_SCHEDULE_ITERATIONS
    except (KeyError, TypeError, ValueError):
        return False


def _without_weights(meta: dict[str, Any], model_path: Path) -> dict[str, Any]:
    """meta.json for the run without its model.pt: the checksum moves from ``files`` (what
    must be there) to ``published_without`` (what was there, and which weights it was)."""
    if not model_path.exists():
        return meta
    files = dict(meta.get("files") or {})
    sha = files.pop(model_path.name, None) or sha256_file(model_path)
    left = {**(meta.get("published_without") or {}),
            model_path.name: {"sha256": sha, "bytes": model_path.stat().st_size}}
    return {**meta, "files": files, "published_without": left}


def _csv_prefix(path: Path, keep: Any) -> bytes | None:
    """The header and the leading lines of a CSV whose first column is an iteration, while
    ``keep(iteration)``; b"" when the file does not exist yet, None when unreadable."""
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:  # nothing recorded yet (a run stopped before its first line)
        return b""
    except OSError:
        return None
    out = lines[:1]
    for line in lines[1:]:
        try:
            if not keep(int(line.split(b",", 1)[0])):
                break
        except ValueError:
            return None
        out.append(line)
    return b"".join(out)


def _same(a: object, b: object) -> bool:
    try:
        x, y = float(a), float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(1.0, abs(x))


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
