"""Swin-Transformer IQA regressor: optional conv stem, timm Swin backbone, MLP regression head.

``f(x) = head(pool(backbone(stem(x))))``, one scalar per image (shape ``[B]``), predicting
the quality score normalised to [0, 1] by the dataset's score range.

Conv stem (``stem_channels = (c_0, ..., c_n)``, empty = none): ``Conv3x3(3 -> c_0)``, then
``Conv3x3(c_{i-1} -> c_i)`` with stride 2 at ``i = 1`` and 1 after, each followed by
BatchNorm and GELU ("early convolutions", Xiao et al., NeurIPS 2021). A stem of two or more
convolutions halves the resolution, so the Swin backbone is built for ``img_size / 2`` px,
``patch_size / 2`` and ``in_chans = c_n``: the token grid ``img_size / patch_size`` is the same
as without a stem. Without it a from-scratch micro Swin on the synthetic data stays at the
constant-prediction plateau (test SRCC about 0.3); the stem is what lets it see blur, noise
and blocking (``README``, "Training recipe").

Presets (``img_size`` px input): ``tiny``/``small``/``base`` are the real
``swin_{tiny,small,base}_patch4_window7_224`` architectures (no stem); ``micro`` is a
CPU-size model (32 px, conv stem (16, 32, 32), patch 4, window 4, embed dim 32,
depths (2, 2), heads (2, 4)), built from the same timm family so that its
pretrained-weight path is the real one. ``micro_plain`` is the earlier micro (64 px, no conv
stem, so no BatchNorm: LayerNorm only), kept for the benchmarks measured with it and for checks
that need a per-sample model (DDP on CPU equals one process with the global batch only then).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from landscape.errors import CheckpointError, LandscapeError
from landscape.models.schema import check_extra, check_swin_config

_ARCH_KEYS = ("img_size", "patch_size", "window_size", "embed_dim", "depths", "num_heads")


@dataclass(frozen=True)
class SwinIQAConfig:
    """Everything needed to rebuild the model (serialisable with ``to_dict``)."""

    preset: str
    timm_name: str
    img_size: int = 224
    patch_size: int = 4
    window_size: int = 7
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    drop_path_rate: float = 0.1
    dropout: float = 0.0
    head_hidden: int = 256
    extra: dict[str, Any] = field(default_factory=dict)
    stem_channels: tuple[int, ...] = ()

    @property
    def stem_stride(self) -> int:
        """Down-sampling of the conv stem: 2 with two or more convolutions, else 1."""
        return 2 if len(self.stem_channels) >= 2 else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        d["stem_channels"] = list(self.stem_channels)
        d["family"] = "swin_iqa"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> SwinIQAConfig:
        """Config from a dict, validated first against :func:`landscape.models.schema.check_swin_config`
        (types, bounds, the ``extra`` allow-list); ``source`` names the file in errors."""
        d = check_swin_config(d, source)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["depths"], d["num_heads"] = tuple(d["depths"]), tuple(d["num_heads"])
        d["stem_channels"] = tuple(d.get("stem_channels", ()))
        return cls(**d)


PRESETS: dict[str, SwinIQAConfig] = {
    "micro": SwinIQAConfig("micro", "swin_tiny_patch4_window7_224", img_size=32, window_size=4,
                           embed_dim=32, depths=(2, 2), num_heads=(2, 4), drop_path_rate=0.0,
                           head_hidden=64, stem_channels=(16, 32, 32)),
    "micro_plain": SwinIQAConfig("micro_plain", "swin_tiny_patch4_window7_224", img_size=64, window_size=4,
                                 embed_dim=32, depths=(2, 2), num_heads=(2, 4), drop_path_rate=0.0,
                                 head_hidden=64),
    "tiny": SwinIQAConfig("tiny", "swin_tiny_patch4_window7_224", depths=(2, 2, 6, 2), drop_path_rate=0.2),
    "small": SwinIQAConfig("small", "swin_small_patch4_window7_224", depths=(2, 2, 18, 2), drop_path_rate=0.3),
    "base": SwinIQAConfig("base", "swin_base_patch4_window7_224", embed_dim=128, depths=(2, 2, 18, 2),
                          num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
}


def model_config(preset: str, *, drop_path_rate: float | None = None, dropout: float | None = None,
                 img_size: int | None = None) -> SwinIQAConfig:
    """Preset config with optional overrides; unknown preset is an error listing the valid ones."""
    if preset not in PRESETS:
        raise LandscapeError(f"unknown model preset '{preset}' (valid: {', '.join(PRESETS)})")
    base = PRESETS[preset].to_dict()
    base.pop("family")
    if drop_path_rate is not None:
        base["drop_path_rate"] = float(drop_path_rate)
    if dropout is not None:
        base["dropout"] = float(dropout)
    if img_size is not None:
        base["img_size"] = int(img_size)
    return SwinIQAConfig.from_dict(base)


def conv_stem(channels: tuple[int, ...]) -> nn.Module:
    """The conv stem of the module docstring; ``nn.Identity`` (no parameters) when ``channels`` is empty."""
    if not channels:
        return nn.Identity()
    layers: list[nn.Module] = []
    c_in = 3
    for i, c in enumerate(channels):
        layers += [nn.Conv2d(c_in, c, 3, stride=2 if i == 1 else 1, padding=1, bias=False),
                   nn.BatchNorm2d(c), nn.GELU()]
        c_in = c
    return nn.Sequential(*layers)


class SwinIQA(nn.Module):
    """Conv stem -> Swin backbone (pooled features) -> Dropout -> Linear -> GELU -> Dropout -> Linear(1)."""

    def __init__(self, config: SwinIQAConfig, backbone: nn.Module):
        super().__init__()
        self.config = config
        self.stem = conv_stem(config.stem_channels)     # nn.Identity without a stem: no state-dict keys
        self.backbone = backbone
        width = backbone.num_features
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(width, config.head_hidden), nn.GELU(),
            nn.Dropout(config.dropout), nn.Linear(config.head_hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.stem(x))).squeeze(-1)


def _backbone_kwargs(config: SwinIQAConfig) -> dict[str, Any]:
    """timm arguments: the architecture keys (input size and patch divided by the stem's stride, input
    channels its width), the head removed, and only the allow-listed ``extra``."""
    kwargs = {k: getattr(config, k) for k in _ARCH_KEYS}
    if config.stem_channels:
        s = config.stem_stride
        kwargs.update(img_size=config.img_size // s, patch_size=config.patch_size // s,
                      in_chans=config.stem_channels[-1])
    return dict(kwargs, num_classes=0, drop_path_rate=config.drop_path_rate,
                **check_extra(config.preset, config.extra))


def timm_backbone(timm_name: str, *, pretrained: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(timm_name, **kwargs)``: random init (``pretrained=None``), a local weights
    file loaded through timm's checkpoint filter (remaps keys, resizes relative-position tables,
    drops a mismatched head), or ``"hub"`` to download by name (needs network). Weights that
    cannot be loaded raise :class:`CheckpointError`, never a silent random init."""
    if pretrained is None:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    overlay = {}
    if str(pretrained) != "hub":
        path = Path(pretrained)
        if not path.is_file():
            raise CheckpointError(f"{path}: pretrained weights file not found")
        overlay = {"file": str(path)}
    try:
        return timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as e:  # timm raises many types (RuntimeError, OSError, HF errors)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{pretrained}: cannot load pretrained weights for "
                              f"{timm_name} ({msg[:300]})") from None


def create_model(config: SwinIQAConfig, *, pretrained: str | Path | None = None) -> SwinIQA:
    """Build the model; ``pretrained``: None, a local weights file or ``"hub"`` (:func:`timm_backbone`)."""
    return SwinIQA(config, timm_backbone(config.timm_name, pretrained=pretrained, **_backbone_kwargs(config)))
