"""Training configuration: one typed dataclass, loadable from YAML/TOML and overridable by the CLI.

``batch_sizes`` are *effective* batches (patches per optimizer step per process
group); with ``accumulate = K`` each step sums K micro-batches of ``B / K``. The
learning rate of a run is ``scaled_lr(lr, B * world_size, reference_batch, rule)``.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from ..errors import LandscapeError
from .lr_rules import RULES

SCHEDULERS = ("cosine", "step", "none")


@dataclass
class TrainConfig:
    """Sweep configuration (defaults in brackets are what ``landscape train --help`` shows)."""

    dataset: str = ""                       # FORMAT:ROOT
    score_column: str | None = None         # KonIQ: MOS / MOS_zscore; recorded
    model: str = "micro"                    # preset: micro, tiny, small, base
    pretrained: str | None = None           # local weights file, or "hub"
    batch_sizes: list[int] = field(default_factory=lambda: [32])
    seeds: list[int] = field(default_factory=lambda: [0])
    lr_scaling: list[str] = field(default_factory=lambda: ["sqrt"])
    lr: float = 1e-4                        # at reference_batch
    reference_batch: int = 32
    accumulate: int = 1
    epochs: int = 10
    patience: int = 5                       # epochs without val-SRCC gain; 0 = off
    train_patches: int = 4                  # random crops per training image per epoch
    test_patches: int = 4                   # crops per evaluation image
    test_random_crop: bool = False          # seeded random test crops instead of a fixed grid
    ranking_alpha: float = 0.5
    ranking_margin: float = 0.0
    weight_decay: float = 0.05
    drop_path: float | None = None          # None = preset default
    dropout: float = 0.0
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    step_size: int = 10                     # for scheduler=step
    step_gamma: float = 0.1
    train_eval_images: int = 256            # fixed training subset measured with the test protocol
    cross_test: list[str] = field(default_factory=list)   # extra test sets FORMAT:ROOT
    save_every: int = 0                     # per-epoch checkpoints every N epochs; 0 = off
    device: str = "auto"
    workers: int = 0
    amp: bool = False                       # bf16 autocast (CUDA only)
    split_seed: int = 0
    skip_bad_images: bool = False

    def validate(self) -> "TrainConfig":
        if not self.dataset or ":" not in self.dataset:
            raise LandscapeError(f"dataset must be FORMAT:ROOT, got '{self.dataset}'")
        for name in ("batch_sizes", "seeds", "lr_scaling"):
            if not getattr(self, name):
                raise LandscapeError(f"{name} is empty")
        for b in self.batch_sizes:
            if b < 1:
                raise LandscapeError(f"batch size must be >= 1, got {b}")
            if b % self.accumulate:
                raise LandscapeError(f"batch size {b} is not divisible by accumulate={self.accumulate}")
        for rule in self.lr_scaling:
            if rule not in RULES:
                raise LandscapeError(f"unknown lr_scaling '{rule}' (valid: {', '.join(RULES)})")
        if self.scheduler not in SCHEDULERS:
            raise LandscapeError(f"unknown scheduler '{self.scheduler}' (valid: {', '.join(SCHEDULERS)})")
        checks = {"lr": self.lr > 0, "epochs": self.epochs >= 1, "accumulate": self.accumulate >= 1,
                  "train_patches": self.train_patches >= 1, "test_patches": self.test_patches >= 1,
                  "reference_batch": self.reference_batch >= 1, "patience": self.patience >= 0,
                  "ranking_alpha": self.ranking_alpha >= 0, "weight_decay": self.weight_decay >= 0,
                  "dropout": 0 <= self.dropout < 1, "workers": self.workers >= 0,
                  "save_every": self.save_every >= 0, "warmup_epochs": self.warmup_epochs >= 0}
        for key, ok in checks.items():
            if not ok:
                raise LandscapeError(f"invalid value for '{key}': {getattr(self, key)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Accept a scalar where a list is expected (``seeds: 0``) and ints for floats."""
    origin = typing.get_origin(annotation)
    if origin is list and not isinstance(value, list):
        value = [value]
    if not _type_ok(value, annotation):
        name = getattr(annotation, "__name__", str(annotation)).replace("typing.", "")
        raise LandscapeError(f"config key '{key}': expected {name}, got {type(value).__name__} {value!r}")
    if annotation is float:
        value = float(value)
    return value


def config_from_mapping(data: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate keys and types of a mapping against :class:`TrainConfig` (hyphens allowed)."""
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise LandscapeError(f"{source}: unknown key '{raw_key}'")
        out[key] = _coerce(f"{source}: {raw_key}" if source != "config" else key, value, hints[key])
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config into validated overrides."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError) as e:
        raise LandscapeError(f"{path}: cannot parse config ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LandscapeError(f"{path}: config must be a mapping of keys to values")
    return config_from_mapping(data, str(path))


def resolve_config(file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < command line (``None`` on the command line = not given)."""
    merged = dict(file_values)
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    return TrainConfig(**config_from_mapping(merged)).validate()
