"""Does a reader ever find no bundle while `--force` replaces it? Exchange vs rename-aside.

    python benchmarks/replace_window.py [--replacements 2000] [--folder /tmp]

A reader process polls BUNDLE/dfr.json as fast as it can while this process replaces the folder
--replacements times with atomic.replace_folder: once with the one-step exchange
(renameat2 RENAME_EXCHANGE), once with its fallback (rename the old folder aside, rename the new one
in). Counts the reader's looks and misses; writes benchmarks/results/replace_window.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

from dfr_edge import atomic
from dfr_edge.report import format_table, machine_info, write_json

HERE = Path(__file__).resolve().parent


def poll(manifest: str, stop, result) -> None:
    looks = misses = 0
    while not stop.is_set():
        looks += 1
        misses += not os.path.isfile(manifest)
    result.put((looks, misses))


def trial(root: Path, replacements: int) -> dict:
    target = root / "bundle"
    target.mkdir()
    (target / "dfr.json").write_text("0")
    stop, result = multiprocessing.Event(), multiprocessing.Queue()
    reader = multiprocessing.Process(target=poll, args=(str(target / "dfr.json"), stop, result))
    reader.start()
    time.sleep(0.2)
    start = time.perf_counter()
    for i in range(replacements):
        new = atomic.temp_dir_beside(target)
        (new / "dfr.json").write_text(str(i))
        atomic.replace_folder(new, target)
    seconds = time.perf_counter() - start
    stop.set()
    looks, misses = result.get()
    reader.join()
    return {"replacements": replacements, "seconds": round(seconds, 1), "looks": looks, "misses": misses}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replacements", type=int, default=2000)
    p.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()), help="file system to test on")
    p.add_argument("--out", type=Path, default=HERE / "results" / "replace_window.json")
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as root:
        (Path(root) / "a").mkdir()
        rows["exchange (renameat2)"] = trial(Path(root) / "a", args.replacements)
        (Path(root) / "b").mkdir()
        with mock.patch.object(atomic, "_exchange", return_value=False):
            rows["rename aside + rename in"] = trial(Path(root) / "b", args.replacements)
    print(format_table(["method", "replacements", "seconds", "reader looks", "looks finding no bundle"],
                       [[name, r["replacements"], r["seconds"], r["looks"], r["misses"]] for name, r in rows.items()]))
    write_json(args.out, {"machine": machine_info(), "folder": str(args.folder), "rows": rows})


if __name__ == "__main__":
    main()
