"""What every command shares: logging set-up, argument types, and turning expected failures into one line.

Library code raises errors that name the file and the remedy (`UnusableFileError`, ManifestError,
ImageReadError, and plain ValueError/FileNotFoundError with a full sentence); `run_main` prints
them, and any OSError, as one `error:` line with exit status 2. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2

# Libraries whose exceptions describe a bad input, should one escape the translation where the file is known.
INPUT_LIBRARIES = ("yaml", "safetensors", "onnx", "onnxruntime", "google")  # google: protobuf (onnx files)

OS_REMEDIES = {
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "give a file name, not a folder",
    errno.EEXIST: "something is already there: choose another path",
}


def describe_os_error(exc: OSError) -> str:
    """`path: what went wrong; what to do` for an OSError from the system (ours carry a sentence already)."""
    if exc.filename is None:
        return str(exc) if not exc.strerror else f"{exc.strerror}; {OS_REMEDIES.get(exc.errno, 'check the disk')}"
    name = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return f"{name}: {exc.strerror or exc}; {OS_REMEDIES.get(exc.errno, 'check the file and the disk')}"


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: the cores not busy with other "
                        "processes right now, at least 1; see README)")


def run_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Expected errors (bad input, missing or unwritable files, refused overwrites) print `error: ...`, exit 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("dfr_edge").setLevel(logging.INFO)
        try:
            return main(argv)
        except (ValueError, RuntimeError, ImportError) as exc:
            return _error(str(exc))
        except OSError as exc:
            return _error(describe_os_error(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in INPUT_LIBRARIES:
                raise
            return _error(f"{type(exc).__name__}: {exc}")

    return wrapper


def _error(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the commands' error format: one `error:` line, exit 2 (the usage stays in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (thresholds: NaN would flag nothing, infinity all or nothing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def check_writable(path: Path, *, folder: bool = False) -> None:
    """Fail before the long work, not after it, when an output cannot be written there."""
    path = Path(path)
    if not folder and path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    target = path if folder else path.parent
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(existing))
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write there ({exc.strerror})", str(path)) from None
