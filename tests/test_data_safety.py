"""No command deletes, replaces or mixes up a user's files (issue 9), run as a user runs them.

Each case runs the real console script in a subprocess and checks: exit status 2, one `error:` line
naming the path, and every file that was there before is still there, unchanged. Refusals come
before any training or inference, so these runs cost an interpreter start each, not a model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dfr_edge.atomic import TEMP_MARK, default_mode, replace_folder, temp_prefix
from dfr_edge.locks import exclusive, lock_path
from dfr_edge.outputs import writing

REPO = Path(__file__).resolve().parents[1]
MODULES = {"dfr-train": "train", "dfr-eval": "evaluate", "dfr-export": "export", "dfr-infer": "infer",
           "dfr-demo": "demo"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def command(name: str) -> list[str]:
    """The installed console script (PATH, or beside this interpreter), else its module's main()."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found:
        return [found]
    return [sys.executable, "-c", f"import sys; from dfr_edge.cli.{MODULES[name]} import main; sys.exit(main())"]


def run(name: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*command(name), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=300)


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under the roots (hidden ones too) with its bytes."""
    return {str(p): p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_refused(result: subprocess.CompletedProcess, *named: object) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for thing in named:
        assert str(thing) in lines[0], lines[0]
    return lines[0]


def documents(folder: Path) -> Path:
    """A folder of a user's own files, hidden and nested ones included."""
    (folder / "sub").mkdir(parents=True)
    (folder / "report.docx").write_bytes(b"quarterly numbers")
    (folder / ".settings").write_text("keep me")
    (folder / "sub" / "photo.png").write_bytes(b"\x89PNG not ours")
    return folder


@pytest.fixture
def bundle(tiny_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


# ------------------------------------------------------------------------------------------------
# dfr-train: --force replaces a bundle and nothing else; never the data


def test_train_force_refuses_a_folder_that_is_not_a_bundle(tiny_data, tmp_path):
    docs = documents(tmp_path / "docs")
    before = snapshot(docs)
    result = run("dfr-train", "--data", tiny_data, "--out", docs, "--force")
    assert "not a dfr-edge bundle" in assert_refused(result, docs)
    assert snapshot(docs) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_train_refuses_an_out_in_the_data(tiny_data, tmp_path, where):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = snapshot(data)
    out = data if where == "same" else data / "train" / "bundle"
    assert_refused(run("dfr-train", "--data", data, "--out", out, "--force"), out)
    assert snapshot(data) == before and not (data / "train" / "bundle").exists()


def test_train_refuses_an_out_around_the_data(tiny_data, tmp_path):
    data = tmp_path / "project" / "images"
    shutil.copytree(tiny_data / "train" / "good", data)
    before = snapshot(tmp_path)
    assert "contains the data" in assert_refused(run("dfr-train", "--data", data, "--out", data.parent, "--force"),
                                                 data.parent)
    assert snapshot(tmp_path) == before


def test_train_refuses_through_a_symlink_to_the_data(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "train" / "good", data)
    (tmp_path / "alias").symlink_to(data)
    before = snapshot(data)
    assert_refused(run("dfr-train", "--data", data, "--out", tmp_path / "alias", "--force"), tmp_path / "alias")
    assert snapshot(data) == before


# ------------------------------------------------------------------------------------------------
# dfr-demo: DIR/bundle is replaced only if an earlier demo in DIR made it


def test_demo_refuses_a_bundle_folder_it_did_not_make(tmp_path, bundle):
    work = tmp_path / "work"
    documents(work / "bundle")
    before = snapshot(work)
    assert "not a dfr-edge bundle" in assert_refused(run("dfr-demo", "--out", work, "--force"), work / "bundle")
    assert snapshot(work) == before  # refused before generating data

    shutil.rmtree(work / "bundle")
    shutil.copytree(bundle, work / "bundle")  # a real bundle, trained elsewhere
    before = snapshot(work)
    assert "--force" in assert_refused(run("dfr-demo", "--out", work), work / "bundle")
    assert snapshot(work) == before


# ------------------------------------------------------------------------------------------------
# dfr-infer: a new or empty folder; --force replaces an earlier run's results only


def test_infer_refuses_a_folder_with_files(tiny_onnx, tiny_data, tmp_path):
    docs = documents(tmp_path / "docs")
    before = snapshot(docs)
    image = tiny_data / "test" / "good" / "000.png"
    assert "not empty" in assert_refused(run("dfr-infer", tiny_onnx, image, "--out", docs), docs)
    assert "no earlier dfr-infer results" in assert_refused(
        run("dfr-infer", tiny_onnx, image, "--out", docs, "--force"), docs)
    assert snapshot(docs) == before


def test_infer_force_replaces_only_the_earlier_results(tiny_onnx, tiny_data, tmp_path):
    out = tmp_path / "out"
    (out / "overlays").mkdir(parents=True)
    (out / "masks").mkdir()
    (out / "results.jsonl").write_text('{"path": "old.png"}\n')
    (out / "overlays" / "old.png").write_bytes(b"old overlay")
    (out / "masks" / "old.png").write_bytes(b"old mask")
    (out / "notes.txt").write_text("the user's notes")
    (out / "overlays" / "README").write_text("not a PNG: not ours")
    image = tiny_data / "test" / "good" / "000.png"

    assert_refused(run("dfr-infer", tiny_onnx, image, "--out", out), out)
    result = run("dfr-infer", tiny_onnx, image, "--out", out, "--force")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["path"] for r in records] == [str(image)]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000.png", "README"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["000.png"]
    assert (out / "notes.txt").read_text() == "the user's notes"


# ------------------------------------------------------------------------------------------------
# One writer at a time: the second run refuses and names the first


@pytest.fixture
def holder(request):
    """Start a process that holds the lock of a path; yields (process, path)."""
    processes = []

    def start(target: Path, name: str = "holder-under-test") -> subprocess.Popen:
        code = ("import sys, time; from dfr_edge.locks import exclusive\n"
                f"with exclusive(sys.argv[1], {name!r}):\n    print('held', flush=True); time.sleep(120)\n")
        process = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                                   env=ENV)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_second_infer_into_one_folder_refuses(tiny_onnx, tiny_data, tmp_path, holder):
    out = tmp_path / "out"
    first = holder(out)
    message = assert_refused(run("dfr-infer", tiny_onnx, tiny_data / "test" / "good", "--out", out), out)
    assert "holder-under-test" in message and f"pid {first.pid}" in message and "since" in message
    assert not out.exists()


@pytest.mark.parametrize("name", ["dfr-export", "dfr-train"])
def test_second_writer_of_a_bundle_refuses(tiny_data, bundle, holder, name):
    stale = bundle / f".dfr.json{TEMP_MARK}abc.json"  # the live holder's temporary: must not be cleaned
    stale.write_text("being written")
    before = snapshot(bundle)
    first = holder(bundle)
    args = [bundle] if name == "dfr-export" else ["--data", tiny_data, "--out", bundle, "--force"]
    assert f"pid {first.pid}" in assert_refused(run(name, *args), bundle)
    assert snapshot(bundle) == before


def test_sigterm_releases_the_lock(tmp_path, holder):
    process = holder(tmp_path / "out")
    assert lock_path(tmp_path / "out").exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert not lock_path(tmp_path / "out").exists()


def test_lock_of_a_dead_holder_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"pid": int(dead.stdout), "host": "here", "command": "dfr-train", "since": "2026-01-01T00:00:00"}
    lock_path(tmp_path / "b").write_text(json.dumps(record))  # what a SIGKILLed holder leaves
    with exclusive(tmp_path / "b", "dfr-export"):
        assert json.loads(lock_path(tmp_path / "b").read_text())["command"] == "dfr-export"
    assert f"pid {record['pid']}" in caplog.text and "no longer running" in caplog.text
    assert not lock_path(tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------
# What interrupted runs leave, and how bundles are written


def test_stale_temporaries_are_removed_and_nothing_else(bundle):
    ours = [bundle.parent / f"{temp_prefix(bundle)}x1y2z3", bundle / f"{temp_prefix(bundle / 'dfr.json')}q.json"]
    ours[0].mkdir()
    (ours[0] / "cae.safetensors").write_bytes(b"half")
    ours[1].write_text("{")
    (bundle / ".user-notes").write_text("hidden, but the user's")
    before = {k: v for k, v in snapshot(bundle).items() if TEMP_MARK not in k}
    with writing(bundle, "test"):
        assert not any(p.exists() for p in ours)
    assert snapshot(bundle) == before


def test_a_bundle_is_readable_whole(tiny_bundle):
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_bundle.iterdir()}
    assert set(modes.values()) == {default_mode()}, modes
    assert tiny_bundle.stat().st_mode & 0o777 == default_mode(directory=True)


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_folder(tmp_path, monkeypatch, exchange):
    import dfr_edge.atomic as atomic

    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target, new = tmp_path / "b", tmp_path / ".new"
    target.mkdir()
    (target / "dfr.json").write_text("old")
    new.mkdir()
    (new / "dfr.json").write_text("new")
    replace_folder(new, target)
    assert (target / "dfr.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_truncated_video_warns_with_counts(tmp_path, caplog):
    from test_infer_cli import write_video

    from dfr_edge.runtime.sources import iter_items

    video = tmp_path / "clip.avi"
    write_video(video, frames=10, width=96, height=80)
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    frames = [item for item in iter_items([video]) if item.frame is not None]
    assert 0 < len(frames) < 10
    assert f"read {len(frames)} of the 10 frames" in caplog.text

