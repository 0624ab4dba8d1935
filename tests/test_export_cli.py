"""dfr-export end to end, in process: the files it writes, the table it prints, the errors it refuses with."""

from __future__ import annotations

import contextlib
import io
import shutil

import pytest

from dfr_edge.cli.export import main

FILES = ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-cpu.onnx")
VARIANTS = ("fp32", "fp16", "int8-tensorrt", "int8-cpu")


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory, tiny_bundle):
    """A copy of tiny_bundle without exported files: dfr-export writes into the bundle."""
    dst = tmp_path_factory.mktemp("cli") / "bundle"
    shutil.copytree(tiny_bundle, dst, ignore=shutil.ignore_patterns("*.onnx"))
    return dst


@pytest.fixture(scope="module")
def first_run(bundle_copy, tiny_data):
    """One full export (every variant, with --eval); its exit code and output, captured by hand
    because capsys is function-scoped."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(bundle_copy), "--int8", "--fp16", "--eval", str(tiny_data)])
    return code, out.getvalue(), err.getvalue()


def test_exports_every_variant_and_prints_a_table(first_run, bundle_copy):
    code, out, err = first_run
    assert code == 0, err
    lines = out.strip().splitlines()
    header = lines[0].split()
    assert header[:2] == ["variant", "file"] and "AUROC" in lines[0] and "PRO" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert tuple(rows) == VARIANTS
    for variant, name in zip(VARIANTS, FILES):
        assert (bundle_copy / name).is_file()
        assert str(bundle_copy / name) in rows[variant]
    assert "(" not in rows["fp32"]  # the baseline
    assert all(("(+" in rows[v]) or ("(-" in rows[v]) for v in VARIANTS[1:])  # deltas vs FP32
    assert sorted(p.name for p in bundle_copy.glob("*.onnx")) == sorted(FILES)
    assert not [p for p in bundle_copy.iterdir() if p.name.startswith(".")]


def test_refuses_to_overwrite_without_force(first_run, bundle_copy, capsys):
    assert first_run[0] == 0
    before = {name: (bundle_copy / name).stat().st_mtime_ns for name in FILES}
    assert main([str(bundle_copy), "--fp16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and "already exists" in captured.err and "--force" in captured.err
    assert {name: (bundle_copy / name).stat().st_mtime_ns for name in FILES} == before


def test_not_a_bundle(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a bundle\n")
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a dfr-edge bundle" in err
    assert not list(tmp_path.glob("*.onnx"))

    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_max_drop_needs_eval(bundle_copy, capsys, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(bundle_copy, dst, ignore=shutil.ignore_patterns("*.onnx"))
    assert main([str(dst), "--fp16", "--max-drop", "0.01"]) == 2
    assert "--max-drop needs --eval" in capsys.readouterr().err
    assert not list(dst.glob("*.onnx"))
