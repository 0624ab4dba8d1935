"""The project's exception for a file it cannot use: it names the file and says what to do.

Raised where the file is known (bundle, dfr.json, model, configuration and image loading), so that a
library's raw message never reaches a user without the file's name; each command's `run_main`
prints it as one `error:` line.
"""

from __future__ import annotations

from pathlib import Path


class UnusableFileError(ValueError):
    """`path` cannot be used: `problem` says why, `remedy` what the user can do about it."""

    def __init__(self, path: Path | str, problem: str, remedy: str) -> None:
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(f"{path}: {problem}; {remedy}")
