"""The model a training config names: a Swin preset or any timm backbone (``timm:NAME``).

- Presets (``micro``, ``tiny``, ``small``, ``base``): :class:`landscape.models.swin_iqa.SwinIQA`,
  ``model_config`` family ``swin_iqa``; ``img_size`` overrides the preset's input size.
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=0, img_size=N,
  drop_path_rate=r)`` plus the toolkit's regression head (pooled features -> Dropout ->
  Linear(256) -> GELU -> Dropout -> Linear(1)), built by the one timm builder of imported models
  (:func:`landscape.models.imported.timm_network`) and stored as a ``timm`` family description
  (:mod:`landscape.models.imported`) with ``score_range = [0, 1]``: the network is trained on
  normalised targets, so its outputs already are normalised scores and the wrapper's map
  ``(g - 0) / (1 - 0)`` is the identity (bit for bit). ``img_size`` reaches timm only for models
  whose constructor takes it (ViT, Swin, ...; not ResNet/ConvNeXt, whose crops are simply that
  size); ``None`` uses the size timm declares for NAME (``pretrained_cfg["input_size"]``, else 224).
  ``drop_path_rate`` is passed when given (``None``: timm's default). The description names no
  file and no loading argument (:mod:`landscape.models.schema` refuses them), so
  :func:`landscape.models.checkpoint.build_model` rebuilds the model from the checkpoint alone.
  ``pretrained``: a local file (or ``"hub"``) loaded into the backbone through timm's checkpoint
  filter (:func:`landscape.models.swin_iqa.timm_backbone`); it is recorded in the run config, not
  in ``model_config``.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.models.imported import build_described, describe
from landscape.models.swin_iqa import PRESETS, create_model, model_config, timm_backbone

TIMM_PREFIX = "timm:"
HEAD_HIDDEN = 256          # hidden width of the regression head of timm:NAME models
DEFAULT_INPUT = 224


def timm_name_of(model: str) -> str | None:
    """``NAME`` of ``"timm:NAME"``, else ``None`` (a preset)."""
    return model[len(TIMM_PREFIX):] if str(model).startswith(TIMM_PREFIX) else None


def check_model_name(model: str) -> str:
    """``model`` if it is a preset or ``timm:NAME`` with NAME a registered timm model, else one line."""
    name = timm_name_of(model)
    if name is None:
        if model not in PRESETS:
            raise LandscapeError(f"unknown model preset '{model}' (valid: {', '.join(PRESETS)}, or timm:NAME)")
        return model
    import timm

    if not name or not timm.is_model(name):
        close = timm.list_models(f"*{name[:6]}*")[:5] if name else []
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise LandscapeError(f"--model {model}: timm has no model '{name}'{hint}; see timm.list_models()")
    return model


def default_input_size(name: str) -> int:
    """Input size (px) timm declares for ``name`` (its ``pretrained_cfg``), else 224."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else DEFAULT_INPUT


def accepts_img_size(name: str) -> bool:
    """Whether the constructor of timm model ``name`` takes ``img_size`` (built on the meta device: no memory)."""
    import timm

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0)
    return "img_size" in inspect.signature(type(net).__init__).parameters


def input_size(model: str, img_size: int | None = None) -> int:
    """Crop size (px) of the model a config names (module docstring)."""
    if img_size is not None:
        return int(img_size)
    name = timm_name_of(model)
    return default_input_size(name) if name else model_config(model).img_size


def timm_description(name: str, *, img_size: int | None = None, drop_path_rate: float | None = None,
                     dropout: float = 0.0) -> dict[str, Any]:
    """The ``model_config`` (``timm`` family) of a trained ``timm:NAME`` model (module docstring)."""
    size = int(img_size) if img_size is not None else default_input_size(name)
    spec: dict[str, Any] = {"name": name, "kwargs": {}, "head": "landscape", "head_hidden": HEAD_HIDDEN,
                            "dropout": float(dropout)}
    if drop_path_rate is not None:
        spec["kwargs"]["drop_path_rate"] = float(drop_path_rate)
    if img_size is not None and accepts_img_size(name):
        spec["img_size"] = size
    return describe("timm", img_size=size, score_range=(0.0, 1.0), timm=spec)


def build_train_model(model: str, *, img_size: int | None = None, drop_path: float | None = None,
                      dropout: float = 0.0, pretrained: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, model_config)`` of a training config's ``model`` (random init unless ``pretrained``)."""
    name = timm_name_of(check_model_name(model))
    if name is None:
        cfg = model_config(model, drop_path_rate=drop_path, dropout=dropout, img_size=img_size)
        return create_model(cfg, pretrained=pretrained), cfg.to_dict()
    desc = timm_description(name, img_size=img_size, drop_path_rate=drop_path, dropout=dropout)
    net = build_described(desc).train()
    if pretrained is not None:
        t = desc["timm"]
        extra = {**t["kwargs"], **({"img_size": t["img_size"]} if "img_size" in t else {})}
        loaded = timm_backbone(name, pretrained=pretrained, num_classes=0, **extra)
        net.net.backbone.load_state_dict(loaded.state_dict(), strict=True)
    return net, desc
