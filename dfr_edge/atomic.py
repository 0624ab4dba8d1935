"""Atomic file writes: readers see the old file or the new one, never half of one.

Every temporary dfr-edge writes is named `.<target name>.dfr-tmp.<random>`, beside its target, so
that one that a killed run left behind is recognisably ours: the next command that takes the
target's lock (outputs.writing) removes exactly those and nothing else.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".dfr-tmp."
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def default_mode(directory: bool = False) -> int:
    """Permissions a normal open() or mkdir() would give (temp files default to owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def temp_prefix(path: Path) -> str:
    """Name prefix of the temporaries written on the way to `path`."""
    return f".{Path(path).name}{TEMP_MARK}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` if the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as exc:  # a failed write() (disk full) names no file: name the one being written
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def temp_dir_beside(path: Path) -> Path:
    """An empty folder beside `path` to build its new contents in, with normal permissions."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    os.chmod(tmp, default_mode(directory=True))
    return tmp


def normalize_modes(folder: Path) -> None:
    """One permission rule for everything under `folder` (files 0666, folders 0777, less the umask).

    Libraries create files with their own modes (temporary files are owner-only); a bundle that a
    service account must read has to be readable whole.
    """
    for root, dirs, files in os.walk(folder):
        os.chmod(root, default_mode(directory=True))
        for name in files:
            os.chmod(os.path.join(root, name), default_mode())


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of `target`: beside it, and in it and its subfolders if it is a folder.

    Only call this while holding the target's lock: any temporary found then belongs to a run that
    was killed before it could clean up. Two levels deep is where dfr-edge writes (bundle files,
    dfr-infer's overlays/ and masks/); deeper folders are not searched.
    """
    target = Path(target)
    found = sorted(target.parent.glob(glob.escape(temp_prefix(target)) + "*"))
    if target.is_dir():
        for pattern in (f".*{TEMP_MARK}*", f"*/.*{TEMP_MARK}*"):
            found += sorted(target.glob(pattern))
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # not Linux, or glibc older than 2.28
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(new: Path, target: Path) -> None:
    """Put folder `new` at `target`, then delete the old target.

    Where the kernel can, the two are exchanged in one step, so a reader always finds a complete
    folder at `target`. Elsewhere the old one is renamed aside and the new one renamed in right
    after: readers can miss the folder for the time between two renames (microseconds).
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        new.rename(target)
        return
    if _exchange(new, target):
        if new.is_symlink():  # target was a link to a folder: the link is replaced, its folder kept
            new.unlink()
        else:
            shutil.rmtree(new)  # now the old folder
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(target), dir=target.parent))
    target.rename(old / "old")  # hidden and marked as ours, so a killed run's leftover is cleaned
    try:
        new.rename(target)
    except BaseException:
        (old / "old").rename(target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
