"""What every command shares: logging set-up and turning expected failures into one clear line."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

EXIT_USAGE = 2


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
