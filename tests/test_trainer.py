"""Training: reproducible, held-out thresholds, bounded cache, bad images handled, VGG paper config."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from dfr_edge.bundle import load_bundle, save_bundle
from dfr_edge.data.images import ImageReadError, load_images
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.evaluate import evaluate
from dfr_edge.geometry import Geometry
from dfr_edge.outputs import OutputRefusedError
from dfr_edge.predict import predict_torch
from dfr_edge.trainer import split_train_val, train


def metrics_of(model, data):
    test = load_test_arrays(open_dataset(data), Geometry(64, 64))
    return evaluate(lambda images: predict_torch(model, images), test).metrics


def test_same_seed_same_model_and_metrics(tiny_data):
    a = train(tiny_config(), open_dataset(tiny_data))
    b = train(tiny_config(), open_dataset(tiny_data))
    for (name, x), y in zip(a.model.cae.state_dict().items(), b.model.cae.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert metrics_of(a.model, tiny_data) == metrics_of(b.model, tiny_data)
    c = train(tiny_config(seed=1), open_dataset(tiny_data))
    assert not torch.equal(a.model.cae.decoder[-1].weight, c.model.cae.decoder[-1].weight)


def test_held_out_split_is_seeded_and_disjoint(tiny_data):
    paths = open_dataset(tiny_data).train
    train_paths, val_paths = split_train_val(paths, 0.25, seed=0)
    assert len(val_paths) == 4 and not set(train_paths) & set(val_paths)
    assert split_train_val(paths, 0.25, seed=0) == (train_paths, val_paths)
    assert split_train_val(paths, 0.25, seed=1)[1] != val_paths


def test_thresholds_come_from_the_held_out_normal_images(tiny_data):
    result = train(tiny_config(), open_dataset(tiny_data))
    maps, scores = predict_torch(result.model, load_images(result.val_paths, 64, 64).images)
    assert (maps > result.thresholds.pixel).mean() == pytest.approx(0.005, abs=0.002)
    assert result.thresholds.image <= scores.max()


def test_streaming_when_the_cache_bound_is_exceeded_trains_the_same_way(tiny_data):
    result = train(tiny_config(cache_max_gb=1e-6), open_dataset(tiny_data))
    assert result.feature_cache == "streamed"
    assert np.isfinite(result.history[-1].train_loss) and result.history[-1].steps == 60


def test_epochs_instead_of_steps(tiny_data):
    result = train(tiny_config(epochs=2, steps=1), open_dataset(tiny_data))
    positions = 12 * 16 * 16
    assert [h.epoch for h in result.history] == [1, 2]
    assert result.history[-1].steps == 2 * (positions // 64)


def test_a_corrupt_image_stops_training_with_its_name_unless_skipped(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = data / "train" / "good" / "zzz_broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="zzz_broken.png"):
        train(tiny_config(val_fraction=0.0), open_dataset(data))
    result = train(tiny_config(val_fraction=0.0, skip_bad_images=True), open_dataset(data))
    assert [p.name for p, _ in result.skipped] == ["zzz_broken.png"]


def test_bundle_round_trip_and_overwrite_protection(tiny_data, tmp_path):
    result = train(tiny_config(), open_dataset(tiny_data))
    out = tmp_path / "bundle"
    save_bundle(result, out, tiny_data)
    assert sorted(p.name for p in out.iterdir()) == ["backbone.safetensors", "cae.safetensors", "config.yaml",
                                                      "dfr.json"]
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    expected = predict_torch(result.model, images)
    loaded = predict_torch(load_bundle(out).model, images)
    np.testing.assert_allclose(loaded[0], expected[0], rtol=1e-5, atol=1e-5)

    with pytest.raises(OutputRefusedError, match="--force"):
        save_bundle(result, out, tiny_data)
    before = (out / "dfr.json").read_text()
    save_bundle(train(tiny_config(seed=3), open_dataset(tiny_data)), out, tiny_data, force=True)
    assert (out / "dfr.json").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary or backup left


def test_incomplete_bundle_is_a_clear_error(tiny_bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    (copy / "cae.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="cae.safetensors"):
        load_bundle(copy)
    with pytest.raises(FileNotFoundError, match="not a directory|does not exist"):
        load_bundle(tmp_path / "nothing")


@pytest.mark.slow
def test_vgg19_paper_configuration_trains_and_scores_end_to_end(tiny_data):
    """The paper's 12 VGG19 layers (C = 3456), faithful padding, random weights, a few steps."""
    config = tiny_config(backbone="vgg19", backbone_weights="random", steps=3, pca_images=2, score="max")
    result = train(config, open_dataset(tiny_data))
    assert result.channels == 3456 and result.backbone.layers[0] == "relu1_1"
    images = load_test_arrays(open_dataset(tiny_data), Geometry(64, 64)).images[:2]
    maps, scores = predict_torch(result.model, images)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    np.testing.assert_allclose(scores, maps.reshape(2, -1).max(1), rtol=1e-6)
