"""``--pretrained FILE`` for training: checked before anything is written, loaded strictly.

:func:`pretrained_match` builds the run's backbone on the meta device (no memory, no draw
from torch's RNG) and matches the file's keys and shapes against it
(:func:`landscape.models.weights.check_pretrained`: safe reading, timm's checkpoint filter,
a classifier head the backbone lacks dropped, every backbone key required and no other key
left). The result is cached per file (path, size, mtime) and model, so the sweep's checks
before its first write and each run's config read the file once.
:func:`pretrained_record` is what ``config.json`` records (``pretrained_matched_keys``,
``pretrained_dropped_keys``, ``pretrained_sha256``; empty without a file).
:func:`build_run_model` builds the model with random init and loads the file into its
backbone with the same match (:func:`landscape.models.weights.load_pretrained`).
``"hub"`` (download by name) keeps timm's own loading and is not checked here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from landscape.errors import CheckpointError
from landscape.models.trainable import build_train_model
from landscape.models.weights import PretrainedMatch, check_pretrained, load_pretrained
from landscape.train.config import TrainConfig

_CACHE: dict[tuple, PretrainedMatch] = {}


def backbone_of(model: nn.Module) -> nn.Module:
    """The timm backbone of a training model (:class:`SwinIQA` ``.backbone``; ``timm:NAME`` ``.net.backbone``)."""
    inner = getattr(model, "net", model)
    backbone = getattr(inner, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise CheckpointError(f"{type(model).__name__}: has no backbone to load pretrained weights into")
    return backbone


def _local_file(cfg: TrainConfig) -> Path | None:
    if cfg.pretrained is None or str(cfg.pretrained) == "hub":
        return None
    path = Path(cfg.pretrained)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights file not found")
    return path


def _build(cfg: TrainConfig, pretrained: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    return build_train_model(cfg.model, img_size=cfg.img_size, drop_path=cfg.drop_path, dropout=cfg.dropout,
                             pretrained=pretrained)


def pretrained_match(cfg: TrainConfig) -> PretrainedMatch | None:
    """How ``cfg.pretrained`` fits the run's backbone (module docstring); ``None`` without a local file."""
    path = _local_file(cfg)
    if path is None:
        return None
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, cfg.model, cfg.img_size, cfg.drop_path, cfg.dropout)
    if key not in _CACHE:
        _CACHE[key] = check_pretrained(lambda: backbone_of(_build(cfg)[0]), path)
    return _CACHE[key]


def pretrained_record(cfg: TrainConfig) -> dict[str, Any]:
    """``config.json``'s pretrained entries (:meth:`PretrainedMatch.record`), ``{}`` without a local file."""
    match = pretrained_match(cfg)
    return match.record() if match else {}


def build_run_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, model_config)`` of a run: random init (seeded by the caller), then the local
    ``--pretrained`` file loaded strictly into the backbone (``"hub"``: timm downloads it)."""
    path = _local_file(cfg)
    model, desc = _build(cfg, None if path is not None else cfg.pretrained)
    if path is not None:
        load_pretrained(backbone_of(model), path)
    return model, desc
