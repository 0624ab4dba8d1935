"""dfr-tune: the synthetic anomaly set, the grid, and a whole tiny run writing a config dfr-train loads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dfr_edge.cli import tune as tune_cli
from dfr_edge.config import TrainConfig, load_config
from dfr_edge.data.synthetic import MIN_DEFECT_CONTRAST, grey_crop_surface
from dfr_edge.metrics import Metrics
from dfr_edge.tune import ANOMALY_KINDS, GridPoint, TuneGrid, measure_agreement, paste_anomalies

TINY_RUN = ["--sizes", "64", "--steps", "30", "--sigmas", "2", "--scores", "max", "topk:10", "--holdout", "0.25"]


def test_pasted_anomalies_keep_the_good_images_and_mask_every_change():
    rng = np.random.default_rng(0)
    goods = [grey_crop_surface(rng) for _ in range(3)]
    images, masks, kinds = paste_anomalies(goods, per_image=2, seed=1)
    assert kinds == ["good", "cutpaste", "perlin_stain", "good", "scratch", "cutpaste", "good", "perlin_stain",
                     "scratch"]
    assert set(kinds) == {"good", *ANOMALY_KINDS}
    clean = {0: goods[0], 1: goods[0], 2: goods[0], 3: goods[1], 4: goods[1], 5: goods[1], 6: goods[2],
             7: goods[2], 8: goods[2]}
    for i, (image, mask, kind) in enumerate(zip(images, masks, kinds)):
        change = np.abs(image.astype(np.float32) - clean[i]).max(axis=2)
        if kind == "good":
            assert image is clean[i] and not mask.any()
        else:
            assert mask.shape == image.shape[:2] and change[mask].mean() >= MIN_DEFECT_CONTRAST
            assert (change[~mask] > 0.5 * change[mask].mean()).mean() < 0.01
    again = paste_anomalies(goods, per_image=2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(images, again[0]))


@pytest.mark.parametrize("grid, message", [
    (dict(steps=()), "steps is empty"),
    (dict(image_sizes=((250, 256),)), "multiple of 32"),
    (dict(image_sizes=((64, 64),), scores=("topk:5000",)), "TensorRT"),
    (dict(scores=("mean",)), "topk:K"),
])
def test_grid_refuses_what_cannot_run_before_any_work(grid, message):
    with pytest.raises(ValueError, match=message):
        TuneGrid(**grid)


def test_agreement_is_spearman_and_regret_of_the_synthetic_pick():
    def point(syn: float, lab: float) -> GridPoint:
        return GridPoint((64, 64), None, 10, 2.0, "max",
                         {"synthetic": Metrics(syn, syn, syn), "labelled": Metrics(lab, lab, lab)}, 0.0)

    points = [point(0.9, 0.8), point(0.7, 0.9), point(0.5, 0.7)]  # synthetic picks the first; real best is 0.9
    agreement = measure_agreement(points, "mean")
    assert agreement.spearman == pytest.approx(0.5)
    assert agreement.regret == pytest.approx(0.1) and agreement.regret_pixel_auroc == pytest.approx(0.1)


def test_refuses_to_overwrite_before_tuning(tiny_data, tmp_path, capsys):
    out = tmp_path / "best.yaml"
    out.write_text("keep: me\n")
    assert tune_cli.main(["--data", str(tiny_data), "--out", str(out), *TINY_RUN]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep: me\n"


def test_labelled_selection_needs_a_test_split(tiny_data, tmp_path, capsys):
    assert tune_cli.main(["--data", str(tiny_data / "train" / "good"), "--out", str(tmp_path / "c.yaml"),
                          "--labelled", *TINY_RUN]) == 2
    assert "no test set" in capsys.readouterr().err


def test_help_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "dfr_edge.cli.tune", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--compare" in done.stdout


@pytest.mark.slow
def test_tiny_two_point_grid_writes_a_config_dfr_train_loads(tiny_data, tmp_path, capsys):
    out, report = tmp_path / "best.yaml", tmp_path / "tune.json"
    assert tune_cli.main(["--data", str(tiny_data), "--out", str(out), "--compare", "--json", str(report),
                          *TINY_RUN]) == 0
    config = load_config(out, {})
    assert isinstance(config, TrainConfig) and config.image_size == [64, 64] and config.steps == 30
    assert config.score in ("max", "topk:10")
    record = json.loads(report.read_text())
    assert len(record["points"]) == 2 and record["winner"] == config.to_dict()
    assert set(record["agreement"]) == {"spearman", "spearman_pixel_auroc", "regret", "regret_pixel_auroc"}
    for p in record["points"]:
        assert 0.0 <= p["synthetic"]["pixel_auroc"] <= 1.0 and 0.0 <= p["labelled"]["pro"] <= 1.0
    assert "Spearman" in capsys.readouterr().out


def test_faint_pastes_are_blended_at_their_opacity():
    goods = [grey_crop_surface(np.random.default_rng(2))]
    images, masks, kinds = paste_anomalies(goods, per_image=3, seed=4, strength=(0.3, 0.3))
    for image, mask in zip(images[1:], masks[1:]):
        change = np.abs(image.astype(np.float32) - goods[0])
        assert change.max() <= 0.3 * 255 + 1 and change.max(axis=2)[mask].mean() >= 0.3 * MIN_DEFECT_CONTRAST


@pytest.mark.parametrize("geometry", [dict(resize="letterbox"), dict(tile=[64, 64]), dict(image_size="auto")])
def test_geometries_it_cannot_score_yet_are_refused_before_any_work(tiny_data, geometry):
    from dfr_edge.data.mvtec import open_dataset
    from dfr_edge.tune import tune

    with pytest.raises(ValueError, match="stretch"):
        tune(open_dataset(tiny_data), TuneGrid(image_sizes=((64, 64),)), TrainConfig(**geometry))
