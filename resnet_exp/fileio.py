"""Atomic writes: a crash or kill -9 never leaves a half-written file (locks: runs/rundir.py).

Every file a run writes goes through ``atomic_write_bytes``; ``observing_writes`` lets a
caller see each write once it is complete (the Ray executor sends a run's files back to
the driver that way when the nodes share no filesystem: ``runs/executing/ray_storage.py``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

WriteObserver = Callable[[Path, bytes], None]


def user_cache_dir() -> Path:
    """This user's cache on this machine, outside results and data: ``$RESNET_EXP_CACHE_DIR``,
    else ``~/.cache/resnet-exp``. It keeps what makes a second plan fast (step timings,
    runs/training/timing.py; a dataset's provenance, data/cifar10.py), so a dry run still
    writes nothing in a results or data folder. Losing it costs time, never a result."""
    return Path(os.environ.get("RESNET_EXP_CACHE_DIR") or Path.home() / ".cache" / "resnet-exp")
_observers: list[WriteObserver] = []


@contextlib.contextmanager
def observing_writes(observer: WriteObserver) -> Iterator[None]:
    """While inside, ``observer(path, data)`` is called after each atomic write is in place,
    in the order of the writes; an exception it raises is the write's."""
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    for observer in list(_observers):
        observer(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically. Serialised in memory first, then written as bytes: torch's own
    writer reports a full disk as a RuntimeError ("file write failed"), where a plain write
    raises OSError(ENOSPC), which the suite stops on cleanly (``is_no_space``)."""
    import torch  # here, not at the top: the report notebooks import this module and need no torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- a full disk
EXIT_NO_SPACE = 3  # the exit status of an invocation stopped by a full disk


def is_no_space(e: BaseException) -> bool:
    """A write failed because the filesystem (or the user's quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "an unknown amount"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_duration(seconds: float) -> str:
    """A duration as the plan prints it: seconds under 90 s, minutes under 1.5 h, else hours."""
    s = seconds
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def no_space_message(path: str | os.PathLike | None) -> str:
    """The one message a full disk gets: where, how much is free, that nothing is lost, what to do."""
    where = Path(path) if path else Path(".")
    return (f"NO SPACE LEFT ON DEVICE writing {where} ({human_bytes(free_bytes(where))} free there). Stopped "
            "everything at once. Nothing finished was lost: every write is atomic, so finished runs are complete "
            "and interrupted runs resume from their last good checkpoint. Free some space on that filesystem (or "
            "pass --results DIR on a bigger one, with the runs moved there) and run the same command again.")
