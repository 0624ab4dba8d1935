"""The bundle on disk: a directory with safetensors weights and `dfr.json` (contract 2).

Layout: `cae.safetensors` (the trained CAE), `backbone.safetensors` (the frozen backbone, truncated
to the layers used, so a bundle exports and runs on a machine without the original weights file),
`dfr.json` (see manifest.py) and `config.yaml` (the effective training configuration, reusable
with `dfr-train --config`). Written to a temporary sibling folder and swapped into place; an
existing bundle is only replaced with `force=True`, and nothing but a bundle is ever replaced
(outputs.check_bundle_target). Every file and folder gets the same permissions (atomic.normalize_modes).
"""

from __future__ import annotations

import datetime as _dt
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dfr_edge import __version__, manifest
from dfr_edge.atomic import normalize_modes, replace_folder, temp_dir_beside
from dfr_edge.backbones import build_backbone
from dfr_edge.cae import CAE
from dfr_edge.digest import files_digest
from dfr_edge.errors import UnusableFileError
from dfr_edge.model import DFRModel, FeatureExtractor
from dfr_edge.outputs import check_bundle_target
from dfr_edge.trainer import TrainResult

CAE_FILE = "cae.safetensors"
BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.yaml"


@dataclass
class Bundle:
    path: Path
    manifest: dict
    model: DFRModel


def package_versions() -> dict[str, str]:
    return {
        "dfr_edge": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def build_manifest(result: TrainResult, data_root: Path) -> dict:
    config, backbone = result.config, result.backbone
    height, width = config.height_width
    last = result.history[-1]
    return {
        "schema": manifest.SCHEMA,
        "schema_version": manifest.SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": {
            "name": backbone.name,
            "layers": backbone.layers,
            "mode": config.vgg_mode if backbone.name == "vgg19" else None,
            "weights": asdict(backbone.origin),
            "mean": list(backbone.mean),
            "std": list(backbone.std),
        },
        "input": {"height": height, "width": width, "dtype": "uint8", "color": "BGR", "layout": "NHWC"},
        "geometry": {**result.geometry.to_dict(), "auto_size": result.auto_size},
        "features": {"channels": result.channels, "grid": [height // 4, width // 4], "pool": 4},
        "cae": {"latent_dim": result.latent_dim, "pca_explained": config.pca_explained,
                "pca_images": config.pca_images, "fixed": config.latent_dim is not None},
        "head": {"sigma": config.sigma, "score": config.score},
        "training": {
            "data": str(Path(data_root).resolve()),
            "count": len(result.train_paths),
            "hash": files_digest(result.train_paths),
            "val_count": len(result.val_paths),
            "val_hash": files_digest(result.val_paths),
            "skipped": [{"path": str(p), "reason": r} for p, r in result.skipped],
            "seed": config.seed,
            "epochs": last.epoch,
            "steps": last.steps,
            "final_train_loss": last.train_loss,
            "final_val_loss": last.val_loss,
            "feature_cache": result.feature_cache,
            "seconds": {k: round(v, 2) for k, v in result.timings.items()},
        },
        "thresholds": result.thresholds.to_dict(),
        "normal_stats": result.normal_stats,
        "metrics": None,
        "versions": package_versions(),
        "config": config.to_dict(),
    }


def save_bundle(result: TrainResult, out: Path, data_root: Path, force: bool = False) -> Path:
    """Write the bundle atomically; refuses to replace anything but a bundle, and that only if force."""
    out = Path(out)
    check_bundle_target(out, force, data_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        model = result.model
        save_file({k: v.contiguous() for k, v in model.cae.state_dict().items()}, str(tmp / CAE_FILE))
        save_file({k: v.contiguous() for k, v in model.extractor.backbone.state_dict().items()},
                  str(tmp / BACKBONE_FILE))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(result.config.to_dict(), sort_keys=False))
        (tmp / manifest.MANIFEST_NAME).write_text(manifest.dumps(build_manifest(result, data_root)))
        normalize_modes(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def model_from_manifest(meta: dict, backbone_state: dict, cae_state: dict, bundle: Path = Path(".")) -> DFRModel:
    """Rebuild the fused module from a manifest and its two weight sets (read from `bundle`, for messages)."""
    manifest_path = bundle / manifest.MANIFEST_NAME
    try:
        backbone = build_backbone(meta["backbone"]["name"], meta["backbone"]["layers"], weights="random",
                                  mode=meta["backbone"].get("mode") or "faithful")
    except ValueError as exc:
        raise manifest.ManifestError(manifest_path, f"backbone: {exc}") from None
    _load_weights(backbone.module, backbone_state, bundle / BACKBONE_FILE, manifest_path,
                  "backbone.name, backbone.layers")
    size = (meta["input"]["height"], meta["input"]["width"])
    extractor = FeatureExtractor(backbone.module, meta["backbone"]["mean"], meta["backbone"]["std"], size)
    if extractor.channels != meta["features"]["channels"]:
        raise manifest.ManifestError(manifest_path, f"features.channels is {meta['features']['channels']} but "
                                     f"the backbone it describes gives {extractor.channels} channels")
    cae = CAE(extractor.channels, meta["cae"]["latent_dim"])
    _load_weights(cae, cae_state, bundle / CAE_FILE, manifest_path, "features.channels, cae.latent_dim")
    try:  # bundles from before the score rule existed scored by the max
        return DFRModel(extractor, cae, meta["head"]["sigma"], meta["head"].get("score", "max")).eval()
    except ValueError as exc:
        raise manifest.ManifestError(manifest_path, f"head.score: {exc}") from None


def _load_weights(module: torch.nn.Module, state: dict, weights: Path, manifest_path: Path, fields: str) -> None:
    """Load `state` into `module`, or say in one line which dfr.json fields disagree with which file."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        module.load_state_dict(state)
        return
    if reshaped:
        key = reshaped[0]
        example = f"{key} is {list(state[key].shape)} in the file, {list(expected[key].shape)} by dfr.json"
    else:
        example = f"{(missing or unexpected)[0]} is {'missing from' if missing else 'extra in'} the file"
    counts = f"{len(missing)} tensor(s) missing, {len(unexpected)} extra, {len(reshaped)} of another shape"
    raise manifest.ManifestError(manifest_path, f"{fields} disagree with {weights} ({counts}; e.g. {example})",
                                 "restore the dfr.json that came with these weights, or retrain with dfr-train")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; anything else (empty, truncated, a pickle) is refused by name."""
    if not path.is_file():
        raise FileNotFoundError(f"bundle {path.parent} is incomplete: {path.name} is missing; retrain with dfr-train")
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise UnusableFileError(path, f"not a readable safetensors file ({exc})", "the bundle is damaged: "
                                "copy it again from its source, or retrain with dfr-train") from None


def load_bundle(path: Path) -> Bundle:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"bundle {path} does not exist or is not a directory (make one with dfr-train)")
    meta = manifest.read(path / manifest.MANIFEST_NAME)
    backbone_state, cae_state = read_weights(path / BACKBONE_FILE), read_weights(path / CAE_FILE)
    return Bundle(path, meta, model_from_manifest(meta, backbone_state, cae_state, path))
