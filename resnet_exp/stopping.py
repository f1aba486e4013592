"""One stop policy for every command, from the first line of ``__main__`` to the end.

- **SIGINT (Ctrl-C), SIGTERM and SIGHUP mean the same**: stop, keeping everything finished
  and writing nothing half (every write is atomic). Exit status 130 after SIGINT, 143 after
  SIGTERM, 129 after SIGHUP (128 + the signal's number, as a shell reports a process killed
  by it), with one line that says so, never a traceback.
- **Saving never waits on printing.** ``./run_all.sh 2>&1 | tee log`` and Ctrl-C: the terminal
  sends SIGINT to tee too, so the pipe closes before the run has checkpointed; a terminal
  that vanishes (ssh dropped) sends SIGHUP and then fails every write. ``install`` wraps
  stdout and stderr (``SurvivingStream``) so that a write to a closed pipe or a vanished
  terminal is dropped instead of raised, and the training loop prints that it stopped only
  after its checkpoint is on disk.
- **Before training**, a signal raises ``Stopped`` (a ``KeyboardInterrupt``) wherever the
  main thread is (imports, data loading, the plan, reports); ``__main__.main`` catches it.
- **From the plan on**, the runner's handlers only set flags, acted on at safe points
  (``runs/executing/executors.DriverStop``), and a training run checkpoints at its next iteration
  (``StopRequest`` below); a second signal stops at once.
- **SIGINT ignored at start stays ignored.** A job started in the background by a
  non-interactive shell (``./run_all.sh &``, ``nohup``) inherits SIGINT as ignored; Python
  then installs no KeyboardInterrupt handler, and neither does this suite, at any moment:
  such a job is stopped with SIGTERM (``kill``, ``timeout``), as POSIX shells intend.

``handled()`` is the list of signals every handler in the suite installs itself for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

# Read once, at the first import (the first lines of __main__): was SIGINT ignored when the
# process started? Python leaves an inherited SIG_IGN in place; so do we.
SIGINT_IGNORED = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
SIGHUP_IGNORED = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup: the user asked to outlive the terminal

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
received: int | None = None  # the first stop signal this process got, if any


class Stopped(KeyboardInterrupt):
    """A stop signal arrived before the runner took over; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def handled() -> tuple[int, ...]:
    """The signals that mean "stop" in this process: SIGTERM, and SIGINT and SIGHUP unless
    each was ignored when the process started."""
    return tuple(sig for sig, ignored in ((signal.SIGINT, SIGINT_IGNORED), (signal.SIGTERM, False),
                                          (signal.SIGHUP, SIGHUP_IGNORED)) if not ignored)


class SurvivingStream:
    """A text stream whose writes survive its reader: once a write or flush fails because the
    pipe's reader is gone (EPIPE) or the terminal vanished (EIO), the stream's file descriptor
    is pointed at /dev/null (so the interpreter's own flush at exit cannot fail either) and
    every later write is dropped. Written by hand: a few lines, and no library does this."""

    def __init__(self, stream: Any) -> None:
        self._stream, self.dead = stream, False

    def _survive(self, call: Callable[[], Any]) -> Any:
        if self.dead:
            return None
        try:
            return call()
        except (BrokenPipeError, OSError) as e:
            if not isinstance(e, BrokenPipeError) and e.errno not in (5, 32):  # EIO, EPIPE
                raise
            self.dead = True
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            return None

    def write(self, text: str) -> int:
        self._survive(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._survive(self._stream.flush)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def survive_output() -> None:
    """stdout and stderr as ``SurvivingStream``s (idempotent); for the command and for workers."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))


_first_at: float | None = None
# timeout(1) sends its SIGTERM to the command and then to the command's whole process group,
# so the command gets it twice at once: a repeat this soon after the first is the same request,
# not the "second signal: stop at once" a person means by pressing Ctrl-C again.
REPEAT_WINDOW_S = 1.0


def note(signum: int) -> bool:
    """Every handler of the suite records the first signal (for the exit status). Returns
    True for a new request: the first signal, or one more than REPEAT_WINDOW_S after it."""
    global received, _first_at
    now = time.monotonic()
    if received is None:
        received, _first_at = signum, now
        return True
    return _first_at is None or now - _first_at > REPEAT_WINDOW_S


@contextlib.contextmanager
def handling(first: Callable[[int], None], again: Callable[[int], None]) -> Iterator[None]:
    """While inside, the stop signals (``handled()``) call ``first`` for a new request and
    ``again`` for a later one (a repeat within REPEAT_WINDOW_S is ignored); the previous
    handlers come back after. Main thread only (Python delivers signals there): elsewhere a
    no-op. The runner's flag and the training loop's checkpoint both stop through this."""
    requested = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal requested
        if not note(signum):  # the same request again
            return
        if requested:
            again(signum)
        else:
            requested = True
            first(signum)

    previous = {sig: signal.signal(sig, handler) for sig in handled()} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _raise(signum: int, frame: Any) -> None:
    note(signum)
    raise Stopped(signum)


def install() -> None:
    """The default from the first line of ``__main__``: a stop signal raises ``Stopped``, and
    output survives its reader (``survive_output``)."""
    survive_output()
    for sig in handled():
        signal.signal(sig, _raise)


def quiet() -> None:
    """After ``main`` returned: the process is on its way out with its status; a late signal
    must not print a traceback from the interpreter's shutdown."""
    for sig in handled():
        signal.signal(sig, lambda signum, frame: note(signum))


def exit_status(default: int = 130) -> int:
    return EXIT_STATUS.get(received, default) if received is not None else default


def message(what: str = "") -> str:
    name = signal.Signals(received).name if received is not None else "SIGINT"
    return (f"{name}: stopped{' ' + what if what else ''}; nothing finished was lost and nothing was left half "
            "written; interrupted runs resume from their last checkpoint on the next invocation")


def pause_for_test(moment: str) -> None:
    """Tests only: with ``RESNET_EXP_TEST_PAUSE=<moment>`` set, say ``[moment] <moment>`` and
    wait there (up to 120 s) until a stop signal arrives, so a test can signal the process
    at exactly that moment without depending on the clock. A no-op otherwise."""
    if os.environ.get("RESNET_EXP_TEST_PAUSE") != moment:
        return
    print(f"[moment] {moment}", file=sys.stderr, flush=True)  # stderr: seen even where stdout is not
    deadline = time.monotonic() + 120
    while received is None and time.monotonic() < deadline:
        time.sleep(0.05)


STOP_FILE_POLL_S = 1.0  # how often a training loop looks for the driver's stop file


class StopRequest:
    """Has anyone asked this run to stop? Ctrl-C or SIGTERM in this process (main thread
    only: Python delivers signals there), or ``stop_file`` appearing (how a driver stops
    workers in other processes or on other machines). A second signal stops at once."""

    def __init__(self, stop_file: str | os.PathLike | None = None) -> None:
        self.stop_file = Path(stop_file) if stop_file else None
        self._requested = False
        self._next_poll = 0.0
        self._handling = contextlib.ExitStack()
        self.signum: int | None = None  # the signal that asked, if one did

    def _first(self, signum: int) -> None:
        if self._requested:  # already stopping (the driver's stop file): a signal now means "at once"
            raise KeyboardInterrupt
        # a flag only: the loop checkpoints, then says so (``stopped``); nothing printed here can
        # block or fail before the checkpoint is saved
        self._requested, self.signum = True, signum

    def stopped(self, where: str) -> str:
        """What the loop prints once its checkpoint is saved."""
        name = signal.Signals(self.signum).name if self.signum else "stop requested by the driver"
        return (f"{name}: {where}, checkpointed; the next invocation resumes it there "
                "(a second signal stops at once, losing the work since the last checkpoint)")

    @property
    def requested(self) -> bool:
        if not self._requested and self.stop_file is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + STOP_FILE_POLL_S
                self._requested = self.stop_file.exists()
        return self._requested

    @staticmethod
    def _again(signum: int) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> "StopRequest":
        # never SIGINT where it was ignored at start; a repeat within a second is the same request
        self._handling.enter_context(handling(self._first, self._again))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handling.close()
