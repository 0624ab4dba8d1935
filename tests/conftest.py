"""Shared fixtures: a small generated dataset and a tiny model trained on it once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfr_edge.data.synthetic import SyntheticSpec, generate_dataset

TINY_SIZE = 64


def tiny_config(**overrides):
    """A configuration that trains in seconds on the tiny dataset (not for accuracy)."""
    from dfr_edge.config import TrainConfig

    values = dict(image_size=[TINY_SIZE, TINY_SIZE], steps=60, batch_positions=64, pca_images=4,
                  val_fraction=0.25, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """MVTec-layout dataset: 16 good training images, 4 good and 8 defective test images, 128 px."""
    root = tmp_path_factory.mktemp("data")
    return generate_dataset(root, SyntheticSpec(size=128, n_train=16, n_test_good=4, n_test_per_defect=2, seed=0))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data) -> Path:
    """A bundle trained on tiny_data with tiny_config (EfficientNet-Lite0, packaged weights)."""
    from dfr_edge.bundle import save_bundle
    from dfr_edge.data.mvtec import open_dataset
    from dfr_edge.trainer import train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    save_bundle(train(tiny_config(), open_dataset(tiny_data)), out, tiny_data)
    return out


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_bundle) -> Path:
    """model.onnx (FP32) exported into a copy of tiny_bundle; read-only for the tests using it."""
    import shutil

    from dfr_edge.bundle import load_bundle
    from dfr_edge.export.pipeline import ExportOptions, export_bundle

    copy = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(tiny_bundle, copy)
    export_bundle(load_bundle(copy), ExportOptions())
    return copy / "model.onnx"
