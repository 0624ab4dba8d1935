"""Configuration: YAML, CLI overrides on top, validation with clear messages."""

from __future__ import annotations

import pytest

from dfr_edge.config import TrainConfig, load_config


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("backbone: vgg19\nlayers: paper16\nsteps: 100\nimage_size: 128\n")
    config = load_config(path, {"steps": 50, "seed": None})
    assert config.backbone == "vgg19" and config.layers == "paper16"
    assert config.steps == 50 and config.seed == 0  # None means "not given"
    assert config.height_width == (128, 128)


def test_round_trip_through_dict():
    config = TrainConfig(sigma=0.0, epochs=3)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("bad, message", [
    ({"unknown_key": 1}, "unknown configuration key"),
    ({"pixel_fpr": 0.0}, "pixel_fpr"),
    ({"steps": 0}, "steps"),
    ({"image_size": [1, 2, 3]}, "image_size"),
])
def test_invalid_values_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(bad)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml", {})
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path, {})
