"""One writer at a time per bundle or output folder: an exclusive lock file beside it.

The lock of `DIR` is the file `.DIR.lock` in DIR's parent, not inside DIR: replacing a bundle
renames its folder, and a lock inside would move away with the old one. It is an `flock` lock, so
the kernel releases it whenever its holder ends, even on SIGKILL or a power cut of the process:
a lock can never block forever. The file records who holds it (pid, host, command, start time),
so the refusal names the other run; a file left by a holder that died is taken over with a warning
naming it. Linux and macOS only (fcntl); the project's targets are both.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dfr_edge.atomic import default_mode

log = logging.getLogger(__name__)
READ_TRIES = 20  # a new holder writes its record right after locking: wait up to ~1 s for it


class LockedError(RuntimeError):
    """Another dfr-edge command is writing the same bundle or output folder."""


def lock_path(target: Path) -> Path:
    """The lock file of `target` (symbolic links resolved, so two names of one folder share it)."""
    target = Path(target).resolve()
    return target.parent / f".{target.name}.lock"


def _holder_record(command: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def describe(record: dict | None) -> str:
    if not record:
        return "another process (it has not said which yet)"
    return f"{record.get('command')} (pid {record.get('pid')} on {record.get('host')}, since {record.get('since')})"


def _read_record(fd: int) -> dict | None:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def _acquire(path: Path, target: Path, command: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read_record(fd)
            for _ in range(READ_TRIES):
                if record:
                    break
                time.sleep(0.05)
                record = _read_record(fd)
            os.close(fd)
            raise LockedError(f"{target} is in use by {describe(record)}; wait until it has finished, "
                              f"or stop it, then run this again") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the previous holder removed the file between our open and flock: retry
            os.close(fd)
            continue
        stale = _read_record(fd)
        if stale:
            log.warning("%s: taking over the lock left by %s, which is no longer running", target, describe(stale))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_record(command)).encode(), 0)
        return fd


def _exit_on_sigterm(signum, frame) -> None:
    log.warning("terminated (signal %d): cleaning up", signum)
    raise SystemExit(128 + signum)


@contextmanager
def exclusive(target: Path, command: str) -> Iterator[None]:
    """Hold `target`'s lock for the block, or raise LockedError naming the run that holds it.

    While it is held, SIGTERM unwinds the command like an exception (exit status 143), so the
    command's own clean-up runs: temporaries are removed and the lock file goes.
    """
    path = lock_path(target)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{target}: the folder {path.parent} does not exist")
    fd = _acquire(path, Path(target), command)
    catch = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if catch:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if catch:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        path.unlink(missing_ok=True)  # before unlocking: a waiter that opened this file sees it is gone
        os.close(fd)
