"""Hostile input: every command answers a corrupt or foreign file with one `error:` line naming it, exit 2.

The cheap cases (dfr-infer, argument errors of every command, dfr-eval's output check) run through
the real console scripts. Commands that import torch or scikit-learn cost seconds just to start, so
their cases call the same `main` in-process (run_main included). Every case also checks that no file
of the user changed. API cases (frames, thresholds, chunking) use a fake backend.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from dfr_edge.atomic import atomic_path
from dfr_edge.cli.common import run_main
from dfr_edge.config import TrainConfig, load_config
from dfr_edge.manifest import ManifestError, validate
from dfr_edge.report import format_table
from dfr_edge.runtime.backend import PREFERRED_MODELS, pick_model
from dfr_edge.runtime.detector import Detection, Detector

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"dfr-train": "train", "dfr-eval": "evaluate", "dfr-export": "export", "dfr-infer": "infer"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def script(name: str) -> list[str]:
    """The installed console script, or the same `main` through this interpreter."""
    found = shutil.which(name)
    if found:
        return [found]
    return [sys.executable, "-c", f"import sys; from dfr_edge.cli.{MODULES[name]} import main; sys.exit(main())"]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under the roots with a digest of its bytes: a changed, added or removed file shows."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


def the_error_line(code: int, stderr: str) -> str:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def refused(command: str, *args, watch: tuple[Path, ...] = ()) -> str:
    """Run a console script that must refuse; returns its one error line."""
    before = snapshot(*watch)
    done = subprocess.run([*script(command), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=300, cwd=ROOT)
    line = the_error_line(done.returncode, done.stderr)
    assert done.stdout == "", "nothing may be reported as done before the refusal"
    assert snapshot(*watch) == before
    return line


def refused_in_process(main, capsys, *args, watch: tuple[Path, ...] = ()) -> str:
    before = snapshot(*watch)
    code = main([str(a) for a in args])
    line = the_error_line(code, capsys.readouterr().err)
    assert snapshot(*watch) == before
    return line


@pytest.fixture
def exported(tiny_onnx, tmp_path) -> Path:
    """A writable copy of the bundle with model.onnx."""
    return Path(shutil.copytree(tiny_onnx.parent, tmp_path / "exported"))


@pytest.fixture
def image(tiny_data) -> Path:
    return tiny_data / "test" / "good" / "000.png"


# --- console scripts, torch-free ----------------------------------------------------------------------------

def corrupt_models(exported: Path) -> dict[str, Path]:
    folder = exported.parent / "models"
    folder.mkdir()
    models = {"text": folder / "text.onnx", "empty": folder / "empty.onnx", "truncated": folder / "cut.onnx"}
    models["text"].write_text("this is not a model\n")
    models["empty"].write_bytes(b"")
    models["truncated"].write_bytes((exported / "model.onnx").read_bytes()[:4000])
    return models


def test_corrupt_models_in_dfr_infer_and_dfr_eval(exported, image, tiny_data, tmp_path, capsys):
    from dfr_edge.cli import evaluate

    models = corrupt_models(exported)
    for kind, model in models.items():
        line = refused("dfr-infer", model, image, "--out", tmp_path / "out", watch=(models["text"].parent,))
        assert str(model) in line and "not a loadable ONNX model" in line and "dfr-export" in line, kind
    assert not (tmp_path / "out").exists()
    line = refused_in_process(evaluate.main, capsys, models["truncated"], "--data", tiny_data,
                              watch=(models["text"].parent, tiny_data))
    assert str(models["truncated"]) in line and "not a loadable ONNX model" in line


def test_foreign_onnx_and_folders_that_are_not_bundles(exported, image, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "foreign",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 3])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    line = refused("dfr-infer", foreign, image, "--out", tmp_path / "out", watch=(tmp_path,))
    assert str(foreign) in line and "no dfr.json metadata" in line

    line = refused("dfr-infer", image.parent, image, "--out", tmp_path / "out", watch=(tmp_path,))
    assert str(image.parent) in line and "not a model file or a bundle" in line
    (exported / "model.onnx").unlink()  # a bundle that was never exported
    line = refused("dfr-infer", exported, image, "--out", tmp_path / "out", watch=(tmp_path,))
    assert str(exported) in line and "model.int8-cpu.onnx" in line and f"dfr-export {exported}" in line


def test_dfr_infer_runs_a_bundle_with_its_best_model(exported, image, tmp_path):
    done = subprocess.run([*script("dfr-infer"), str(exported), str(image), "--out", str(tmp_path / "out"),
                           "--no-images"], capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"{exported}: running model.onnx" in done.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("command, args, says", [
    ("dfr-eval", ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    ("dfr-eval", ["--batch-size", "-3"], "must be at least 1, got -3"),
    ("dfr-infer", ["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    ("dfr-infer", ["--pixel-threshold", "nan"], "argument --pixel-threshold: must be a finite number"),
    ("dfr-infer", ["--image-threshold=-inf"], "argument --image-threshold: must be a finite number"),
    ("dfr-export", ["--calib-count", "0"], "argument --calib-count: must be at least 1"),
    ("dfr-export", ["--max-drop", "nan"], "argument --max-drop: must be a finite number"),
    ("dfr-train", ["--data", "{model}"], "the following arguments are required: --out"),
])
def test_bad_arguments_are_one_line(tiny_onnx, image, tmp_path, command, args, says):
    positional = {"dfr-eval": [tiny_onnx, "--data", tmp_path], "dfr-infer": [tiny_onnx, image, "--out", tmp_path],
                  "dfr-export": [tiny_onnx.parent], "dfr-train": []}[command]
    args = [a.replace("{model}", str(tiny_onnx)) for a in args]
    line = refused(command, *positional, *args, watch=(tiny_onnx.parent,))
    assert says in line and f"see {command} --help" in line


def test_dfr_eval_checks_its_json_target_before_the_work(tiny_onnx, tiny_data, tmp_path):
    blocker = tmp_path / "report"
    blocker.write_text("a file where a folder is expected\n")
    line = refused("dfr-eval", tiny_onnx, "--data", tiny_data, "--json", blocker / "metrics.json",
                   watch=(tmp_path, tiny_onnx.parent))
    assert str(blocker) in line and "not a folder" in line


# --- commands that import torch or scikit-learn: in-process through the same main -------------------------------

def test_dfr_eval_corrupt_test_image_gets_advice_it_can_follow(tiny_onnx, tiny_data, tmp_path, capsys):
    from dfr_edge.cli import evaluate

    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    broken = data / "test" / "good" / "001.png"
    broken.write_bytes(b"\x89PNG but cut short")
    line = refused_in_process(evaluate.main, capsys, tiny_onnx, "--data", data, watch=(data, tiny_onnx.parent))
    assert str(broken) in line and "replace it with a readable image or remove it" in line
    assert "--skip-bad-images" not in line  # dfr-eval has no such option


def test_dfr_export_refuses_a_pickle_posing_as_weights(tiny_bundle, tmp_path, capsys):
    from dfr_edge.cli import export

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    (bundle / "backbone.safetensors").write_bytes(b"\x80\x04\x95" + bytes(200))  # a pickle's opening bytes
    line = refused_in_process(export.main, capsys, bundle, watch=(bundle,))
    assert str(bundle / "backbone.safetensors") in line and "not a readable safetensors file" in line


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_dfr_eval_refuses_damaged_weights(tiny_bundle, tiny_data, tmp_path, capsys, damage):
    from dfr_edge.cli import evaluate

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    weights = bundle / "cae.safetensors"
    weights.write_bytes(b"" if damage == "empty" else weights.read_bytes()[:1000])
    line = refused_in_process(evaluate.main, capsys, bundle, "--data", tiny_data, watch=(bundle, tiny_data))
    assert str(weights) in line and "safetensors" in line


def edit_manifest(bundle: Path, change) -> None:
    meta = json.loads((bundle / "dfr.json").read_text())
    change(meta)
    (bundle / "dfr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("change, says", [
    (lambda m: m["input"].update(height=100), "input.height must be a multiple of 32"),
    (lambda m: m["input"].update(height=0), "input.height must be a multiple of 32"),
    (lambda m: m["head"].update(sigma=-3), "head.sigma must be a finite number >= 0"),
    (lambda m: m.update(schema_version=0), "schema_version must be an integer >= 1"),
    (lambda m: m["normal_stats"].pop("pixel_median"), "missing normal_stats.pixel_median"),
    (lambda m: m["thresholds"].update(pixel=math.nan), "thresholds.pixel must be a finite number"),
    (lambda m: m["cae"].update(latent_dim=m["cae"]["latent_dim"] + 3),
     "features.channels, cae.latent_dim disagree with {bundle}/cae.safetensors"),
    (lambda m: m["backbone"].update(layers=m["backbone"]["layers"][:-1]),
     "backbone.name, backbone.layers disagree with {bundle}/backbone.safetensors"),
], ids=["height-100", "height-0", "sigma", "schema-version", "pixel-median", "nan-threshold", "latent-dim",
        "layers"])
def test_dfr_export_refuses_a_hand_edited_manifest(tiny_bundle, tmp_path, capsys, change, says):
    from dfr_edge.cli import export

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    edit_manifest(bundle, change)
    line = refused_in_process(export.main, capsys, bundle, watch=(bundle,))
    assert f"{bundle / 'dfr.json'}:" in line and says.format(bundle=bundle) in line
    assert len(line) < 500  # a sentence, not a dump of state-dict keys


@pytest.mark.parametrize("text, says", [
    ("steps: !!python/object:os.system echo\n", "not valid YAML at line 1"),
    ("steps: [1\n", "not valid YAML at line 2"),
    ('steps: "abc"\n', "steps must be of type int"),
    ("image_size: 100\n", "image_size sides must be a multiple of 32"),
])
def test_dfr_train_refuses_a_bad_config_file(tiny_data, tmp_path, capsys, text, says):
    from dfr_edge.cli import train

    config = tmp_path / "config.yaml"
    config.write_text(text)
    line = refused_in_process(train.main, capsys, "--data", tiny_data, "--out", tmp_path / "b", "--config", config,
                              watch=(tmp_path, tiny_data))
    assert str(config) in line and says in line


def test_dfr_export_corrupt_calibration_image_gets_advice_it_can_follow(tiny_bundle, tiny_data, tmp_path, capsys):
    from dfr_edge.cli import export

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    calib = Path(shutil.copytree(tiny_data / "train" / "good", tmp_path / "calib"))
    broken = calib / "000.png"
    broken.write_text("not an image")
    line = refused_in_process(export.main, capsys, bundle, "--int8", "--calib", calib, watch=(bundle, calib))
    assert str(broken) in line and "--skip-bad-images" not in line and "remove it" in line


# --- how run_main words system errors ------------------------------------------------------------------------

def test_os_errors_name_the_file_and_the_remedy(tmp_path, capsys):
    target = tmp_path / "metrics.json"

    @run_main
    def disk_full(argv):
        with atomic_path(target):  # write() on a full disk raises without a file name
            raise OSError(errno.ENOSPC, "No space left on device")

    @run_main
    def no_permission(argv):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    line = the_error_line(disk_full([]), capsys.readouterr().err)
    assert line == f"error: {target}: No space left on device; the disk is full: free some space and run again"
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
    line = the_error_line(no_permission([]), capsys.readouterr().err)
    assert line == f"error: {target}: Permission denied; check its permissions"


def test_an_unwritable_output_is_refused_before_the_work(tiny_onnx, tiny_data, tmp_path, capsys, monkeypatch):
    import tempfile

    from dfr_edge.cli import evaluate

    def denied(*args, **kwargs):  # as a read-only folder answers (the tests may run as root, who may write)
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    target = tmp_path / "report" / "metrics.json"
    line = refused_in_process(evaluate.main, capsys, tiny_onnx, "--data", tiny_data, "--json", target,
                              watch=(tiny_onnx.parent, tiny_data))
    assert line == f"error: {target}: cannot write there (Permission denied); check its permissions"


def test_a_bug_still_shows_its_traceback():
    @run_main
    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        buggy([])


# --- the API: frames, thresholds, chunks ---------------------------------------------------------------------

@dataclass
class RecordingBackend:
    """A fake engine: score = frame brightness; it records every batch it was given."""

    max_batch: int = 3
    height: int = 32
    width: int = 32
    name: str = "fake"
    path: Path = Path("fake.onnx")
    export_info: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=lambda: {"thresholds": {"pixel": 0.5, "image": 0.5},
                                                    "normal_stats": {"pixel_median": 0.1}})
    batches: list[int] = field(default_factory=list)

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert images.dtype == np.uint8 and images.shape[1:] == (self.height, self.width, 3)
        assert len(images) <= self.max_batch
        self.batches.append(len(images))
        maps = images.mean(axis=3, dtype=np.float32) / 255.0
        return maps, maps.max(axis=(1, 2))


def frames(count: int) -> list[np.ndarray]:
    return [np.full((40 + i, 50, 3), 20 * i, np.uint8) for i in range(count)]


def test_detect_chunks_by_the_backends_max_batch():
    backend = RecordingBackend()
    detections = Detector(backend).detect(frames(7))
    assert backend.batches == [3, 3, 1]
    assert [round(d.score * 255) for d in detections] == [20 * i for i in range(7)]  # input order kept
    assert [d.anomaly_map.shape for d in detections] == [(40 + i, 50) for i in range(7)]
    maps, scores = Detector(backend).infer(np.zeros((5, 32, 32, 3), np.uint8))
    assert backend.batches[3:] == [3, 2] and maps.shape == (5, 32, 32) and scores.shape == (5,)


def test_one_frame_gives_one_detection():
    detector = Detector(RecordingBackend())
    colour, grey = frames(3)[2], np.full((30, 20), 200, np.uint8)
    single = detector.detect(colour)
    assert isinstance(single, Detection) and single.score == detector.detect([colour])[0].score
    assert isinstance(detector.detect(grey), Detection) and detector.detect(grey).anomaly_map.shape == (30, 20)
    batch = detector.detect(np.stack([colour, colour]))  # N x H x W x 3: a batch
    assert isinstance(batch, list) and len(batch) == 2


@pytest.mark.parametrize("bad, says", [
    (None, "frame 1 is NoneType, not an image array"),
    (np.zeros((0, 0, 3), np.uint8), "frame 1 is empty (0 x 0 pixels)"),
    (np.zeros((0, 10), np.uint8), "frame 1 is empty"),
])
def test_none_or_empty_frames_are_refused_by_position(bad, says):
    backend = RecordingBackend()
    with pytest.raises(ValueError) as info:
        Detector(backend).detect([frames(1)[0], bad])
    assert says in str(info.value) and backend.batches == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_thresholds_must_be_finite(value):
    with pytest.raises(ValueError, match="pixel threshold must be a finite number"):
        Detector(RecordingBackend(), pixel_threshold=value)
    with pytest.raises(ValueError, match="image threshold must be a finite number"):
        Detector(RecordingBackend(), image_threshold=value)


# --- shared rules, model choice, tables --------------------------------------------------------------------------

@pytest.mark.parametrize("config_values, manifest_change, field_name", [
    ({"image_size": [100, 64]}, lambda m: m["input"].update(height=100), "input.height"),
    ({"sigma": -3.0}, lambda m: m["head"].update(sigma=-3.0), "head.sigma"),
    ({"pixel_fpr": 1.5}, lambda m: m["thresholds"].update(pixel_fpr=1.5), "thresholds.pixel_fpr"),
    ({"image_quantile": 0.0}, lambda m: m["thresholds"].update(image_quantile=0.0), "thresholds.image_quantile"),
    ({"sigma": math.nan}, lambda m: m["head"].update(sigma=math.nan), "head.sigma"),
])
def test_manifest_and_config_share_their_rules(tiny_bundle, config_values, manifest_change, field_name):
    with pytest.raises(ValueError) as config_error:
        TrainConfig(**config_values)
    meta = json.loads((tiny_bundle / "dfr.json").read_text())
    manifest_change(meta)
    with pytest.raises(ManifestError) as manifest_error:
        validate(meta)
    rule_text = str(config_error.value).split(" must ", 1)[1].split(";")[0]
    assert f"{field_name} must {rule_text}" in str(manifest_error.value)


def test_config_file_that_is_not_text(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=f"{path}: not a text file"):
        load_config(path, {})


def test_a_bundle_runs_its_best_model_for_the_provider(tmp_path):
    from dfr_edge.export.int8 import FLAVOURS
    from dfr_edge.export.pipeline import FP16_FILE, FP32_FILE

    exported_names = {FP32_FILE, FP16_FILE, *(f.filename for f in FLAVOURS.values())}
    assert all(set(order) == exported_names for order in PREFERRED_MODELS.values())  # the same file names
    (tmp_path / "dfr.json").write_text("{}")
    for name in exported_names:
        (tmp_path / name).write_bytes(b"")
    assert pick_model(tmp_path, "cpu").name == "model.int8-cpu.onnx"
    assert pick_model(tmp_path, "tensorrt").name == "model.int8.onnx"
    (tmp_path / "model.int8-cpu.onnx").unlink()
    assert pick_model(tmp_path, "cpu").name == "model.onnx"


def test_tables_print_numbers_as_rounded():
    table = format_table(["ms", "AUROC", "count"], [[319.4, 0.987654, 12], [583.1, 0.5, 3]])
    assert table.splitlines()[2:] == ["319.4  0.9877  12", "583.1  0.5     3"]
