"""Where a command may write, so that no run ever deletes or mixes up a user's files (issue 9).

The rules, one place for every command:
- An existing bundle path is replaced only with --force, and only if it holds a dfr-edge bundle (a
  folder whose dfr.json is a valid manifest): --force never deletes a folder of documents or data.
- An output is never the data it is made from, inside it, or around it.
- dfr-infer writes into a new or empty folder. With --force it reuses the folder of an earlier
  dfr-infer run and clears that run's outputs only (results.jsonl, its .partial, and the PNGs in
  overlays/ and masks/); any other file there stays.
- While writing, a command holds the output's lock (locks.py) and first removes the temporaries a
  killed run left there (atomic.py names them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dfr_edge import manifest
from dfr_edge.atomic import remove_stale_temporaries
from dfr_edge.locks import exclusive

log = logging.getLogger(__name__)
INFER_RESULTS = ("results.jsonl", "results.jsonl.partial")
INFER_IMAGE_FOLDERS = ("overlays", "masks")


class OutputRefusedError(FileExistsError):
    """Writing there could delete or mix up files that are not this command's own."""


@contextmanager
def writing(target: Path, command: str) -> Iterator[None]:
    """Hold `target`'s lock for the block, after removing temporaries that killed runs left."""
    with exclusive(target, command):
        stale = remove_stale_temporaries(target)
        if stale:
            log.warning("removed %d temporary file(s) left by an interrupted run: %s", len(stale),
                        ", ".join(p.name for p in stale[:5]) + (" ..." if len(stale) > 5 else ""))
        yield


def bundle_problem(path: Path) -> str | None:
    """None if `path` is a dfr-edge bundle, else why it is not one."""
    path = Path(path)
    if not path.is_dir():
        return "it is not a folder"
    try:
        manifest.read(path / manifest.MANIFEST_NAME)
    except manifest.ManifestError as exc:
        return str(exc)
    return None


def check_apart(out: Path, data: Path) -> None:
    """Refuse an output that is the data folder, lies inside it, or contains it."""
    out_real, data_real = Path(out).resolve(), Path(data).resolve()
    if out_real == data_real or data_real in out_real.parents:
        raise OutputRefusedError(f"--out {out} is inside the data folder {data}; choose an --out outside it")
    if out_real in data_real.parents:
        raise OutputRefusedError(f"--out {out} contains the data folder {data}; replacing it would delete the "
                                 f"data: choose another --out")


def check_bundle_target(out: Path, force: bool, data: Path | None = None) -> None:
    """Refuse to write a bundle at `out` where that would lose anything but a dfr-edge bundle."""
    out = Path(out)
    if data is not None:
        check_apart(out, data)
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise OutputRefusedError(f"{out} already exists; choose another --out or pass --force to replace it")
    problem = bundle_problem(out)
    if problem:
        raise OutputRefusedError(f"{out} is not a dfr-edge bundle, and --force replaces only bundles ({problem}); "
                                 f"nothing was deleted: choose another --out")


def made_from(bundle: Path, data_root: Path) -> bool:
    """True if `bundle` is a dfr-edge bundle trained on data inside `data_root`."""
    try:
        meta = manifest.read(Path(bundle) / manifest.MANIFEST_NAME)
    except manifest.ManifestError:
        return False
    trained_on = Path(meta["training"].get("data", ""))
    root = Path(data_root).resolve()
    return trained_on == root or root in trained_on.parents


def check_demo_target(out: Path, force: bool) -> None:
    """dfr-demo's bundle folder: replaced if an earlier demo in `out` made it (trained on out/data),
    another bundle only with force, anything else never."""
    bundle = Path(out) / "bundle"
    check_bundle_target(bundle, force or made_from(bundle, Path(out) / "data"))


def claim_infer_output(out: Path, force: bool) -> None:
    """Make `out` ready for a dfr-infer run: new, empty, or (with force) an earlier run's folder."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputRefusedError(f"--out {out} is a file, not a folder; choose another --out")
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputRefusedError(f"--out {out} is not empty; choose a new or empty folder, or pass --force to "
                                 f"replace the results of an earlier dfr-infer run there")
    if not any((out / name).is_file() for name in INFER_RESULTS):
        raise OutputRefusedError(f"--out {out} holds no earlier dfr-infer results (no results.jsonl), and --force "
                                 f"replaces only those; nothing was deleted: choose another --out")
    for name in INFER_RESULTS:  # the record first: never an old results.jsonl beside new images
        (out / name).unlink(missing_ok=True)
    for folder in INFER_IMAGE_FOLDERS:
        if (out / folder).is_dir():
            for png in (out / folder).glob("*.png"):
                png.unlink()
    log.info("--force: cleared the results of the earlier dfr-infer run in %s", out)
