"""dfr-train, dfr-eval and the demo pipeline, run in-process the way a user runs them."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_config

from dfr_edge import manifest
from dfr_edge.cli import evaluate as eval_cli
from dfr_edge.cli import train as train_cli
from dfr_edge.data.synthetic import SyntheticSpec
from dfr_edge.demo import run_demo

TINY = ["--image-size", "64", "--steps", "30"]


def test_train_then_eval_with_json_and_overlays(tiny_data, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("batch_positions: 64\npca_images: 4\nval_fraction: 0.25\n")
    bundle = tmp_path / "b"
    assert train_cli.main(["--data", str(tiny_data), "--out", str(bundle), "--config", str(config), *TINY]) == 0
    meta = manifest.read(bundle / "dfr.json")
    assert meta["config"]["batch_positions"] == 64 and meta["config"]["steps"] == 30  # YAML + CLI
    assert "pixel thr" in capsys.readouterr().out

    report = tmp_path / "m.json"
    assert eval_cli.main([str(bundle), "--data", str(tiny_data), "--json", str(report),
                          "--overlays", str(tmp_path / "ov")]) == 0
    result = json.loads(report.read_text())
    assert {"image_auroc", "pixel_auroc", "pro"} <= set(result) and result["images"] == 12
    assert sorted(result["by_type"]) == ["blob", "cutout", "scratch", "stain"]
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3 + 4 * 2  # up to 3 per type: 4 good, 2 per defect
    assert manifest.read(bundle / "dfr.json")["metrics"]["pro"] == result["pro"]


def test_train_refuses_to_overwrite_before_training(tiny_data, tiny_bundle, capsys):
    before = (tiny_bundle / "dfr.json").read_text()
    assert train_cli.main(["--data", str(tiny_data), "--out", str(tiny_bundle), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tiny_bundle / "dfr.json").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/folder"], "does not exist"),
    (["--data", "{data}", "--backbone", "alexnet"], "unknown backbone"),
    (["--data", "{data}", "--image-size", "100"], "multiple of 32"),
])
def test_train_errors_are_one_clear_line(tiny_data, tmp_path, capsys, args, message):
    args = [a.replace("{data}", str(tiny_data)) for a in args]
    assert train_cli.main([*args, "--out", str(tmp_path / "b"), *TINY[2:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_eval_needs_a_test_set_and_a_bundle(tiny_data, tiny_bundle, tmp_path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_data / "train" / "good", plain)
    assert eval_cli.main([str(tiny_bundle), "--data", str(plain)]) == 2
    assert "test set" in capsys.readouterr().err
    assert eval_cli.main([str(tmp_path), "--data", str(tiny_data)]) == 2
    assert "dfr.json" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    spec = SyntheticSpec(size=64, n_train=12, n_test_good=3, n_test_per_defect=2)
    result = run_demo(tmp_path, spec, tiny_config(val_fraction=0.25))
    assert [r["model"] for r in result.rows] == ["torch (bundle)", "fp32", "int8-tensorrt", "int8-cpu"]
    torch_row, fp32_row = result.rows[0], result.rows[1]
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert fp32_row[key] == pytest.approx(torch_row[key], abs=1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.rows
    assert any(result.overlays.glob("*.png"))
    # Running it again reuses the dataset and replaces its own bundle.
    assert run_demo(tmp_path, spec, tiny_config(val_fraction=0.25)).rows[0]["model"] == "torch (bundle)"


def test_eval_scores_an_exported_model_like_its_bundle(tiny_data, tiny_bundle, tmp_path, capsys):
    from dfr_edge.bundle import load_bundle
    from dfr_edge.export.pipeline import ExportOptions, export_bundle

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    export_bundle(load_bundle(bundle), ExportOptions())
    before = (bundle / "dfr.json").read_text()
    reports = {}
    for name, target in (("bundle", bundle), ("onnx", bundle / "model.onnx")):
        reports[name] = tmp_path / f"{name}.json"
        assert eval_cli.main([str(target), "--data", str(tiny_data), "--json", str(reports[name])]) == 0
    torch_result, onnx_result = (json.loads(reports[k].read_text()) for k in ("bundle", "onnx"))
    assert "fp32 (onnxruntime:CPUExecutionProvider)" in capsys.readouterr().out
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert onnx_result[key] == pytest.approx(torch_result[key], abs=1e-3)
    assert json.loads((bundle / "dfr.json").read_text())["metrics"] is not None
    assert json.loads(before)["metrics"] is None  # only evaluating the bundle itself records metrics
