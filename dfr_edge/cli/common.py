"""What every command shares: logging set-up and turning expected failures into one clear line."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

EXIT_USAGE = 2


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_at_least_one, help="CPU threads (default: the cores not busy with other "
                        "processes right now, at least 1; see README)")


def run_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Expected errors (bad input, missing files, refused overwrites) print `error: ...`, exit 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("dfr_edge").setLevel(logging.INFO)
        try:
            return main(argv)
        except (FileNotFoundError, FileExistsError, ValueError, RuntimeError, ImportError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
