"""Training configuration: one typed dataclass, loadable from YAML/TOML and overridable by the CLI.

``batch_sizes`` are *effective* batches (patches per optimizer step per process
group); with ``accumulate = K`` each step sums K micro-batches of ``B / K``. The
learning rate of a run is ``scaled_lr(lr, B * world_size, reference_batch, rule)``.

Protocol keys: ``split`` (``auto``: the format's official split where it has one, else the
seeded split by reference image / image of :mod:`landscape.data.splits`; ``official``;
``random``), ``split_seeds`` (one run per split seed: a sweep axis like ``seeds``; more than one
needs a random split), ``split_ratio`` ``[train, val, test]`` (default 0.7/0.1/0.2; a zero val
share, e.g. HyperIQA's paper mode 0.8/0/0.2, selects epochs on the test split: stated in
``dataset.json``), ``test_random_crop`` (``test_crops: grid | random`` in a config file).
Older files: ``split_seed: N`` reads as ``split_seeds: [N]``.
"""
from __future__ import annotations

import dataclasses
import json
import math
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

from landscape.data.records import SPLIT_MODES
from landscape.data.splits import DEFAULT_RATIOS, check_ratios, parse_ratios
from landscape.errors import LandscapeError, check_choice, check_positive_int
from landscape.models.schema import MAX_IMG_SIZE
from landscape.models.trainable import check_model_name
from landscape.train.losses import REGRESSION_LOSSES
from landscape.train.lr_rules import RULES
from landscape.train.recipes import recipe

SCHEDULERS = ("cosine", "step", "none")
TEST_CROPS = ("grid", "random")          # config-file / CLI names of test_random_crop False / True
ALIASES = {"split_seed": "split_seeds", "test_crops": "test_random_crop"}   # older / friendlier keys
MAX_SEED = 2 ** 63 - 1      # seeds are torch/numpy int64 seeds


@dataclass
class TrainConfig:
    """Sweep configuration (defaults in brackets are what ``landscape train --help`` shows)."""

    dataset: str = ""                       # FORMAT:ROOT
    score_column: str | None = None         # KonIQ: MOS / MOS_zscore; recorded
    model: str = "micro"                    # preset: micro, tiny, small, base; or timm:NAME
    img_size: int | None = None             # crop size in px; None = preset / timm default
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
    loss: str = "l1"                        # regression term: l1 (HyperIQA) or mse
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
    split: str = "auto"                     # auto (official where the format has one, else random), official, random
    split_seeds: list[int] = field(default_factory=lambda: [0])
    split_ratio: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))   # train, val, test
    skip_bad_images: bool = False
    allow_overlap: bool = False             # accept an image listed in two splits (recorded in config.json)

    @property
    def split_seed(self) -> int:
        """The first split seed (the one of a single-split sweep)."""
        return self.split_seeds[0]

    def validate(self) -> TrainConfig:
        if not self.dataset or ":" not in self.dataset:
            raise LandscapeError(f"dataset must be FORMAT:ROOT, got '{self.dataset}'")
        for spec in self.cross_test:
            if ":" not in spec:
                raise LandscapeError(f"cross_test must be FORMAT:ROOT, got '{spec}'")
        check_model_name(self.model)
        check_choice("split", self.split, SPLIT_MODES)
        check_choice("loss", self.loss, REGRESSION_LOSSES)
        check_ratios(self.split_ratio)
        if self.img_size is not None:
            check_positive_int("img_size", self.img_size, minimum=16, maximum=MAX_IMG_SIZE)
        if len(set(self.split_seeds)) != len(self.split_seeds):
            raise LandscapeError(f"split_seeds {self.split_seeds}: each split seed once")
        if self.split == "official" and len(self.split_seeds) > 1:
            raise LandscapeError(f"split_seeds {self.split_seeds}: the official split has no seed; "
                                 f"use --split random to sweep split seeds")
        for seed in self.split_seeds:
            check_positive_int("split seed", seed, minimum=0, maximum=MAX_SEED)
        for name in ("batch_sizes", "seeds", "lr_scaling", "split_seeds"):
            if not getattr(self, name):
                raise LandscapeError(f"{name} is empty")
        for seed in self.seeds:
            check_positive_int("seed", seed, minimum=0, maximum=MAX_SEED)
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
        checks = {"lr": 0 < self.lr < math.inf, "epochs": self.epochs >= 1, "accumulate": self.accumulate >= 1,
                  "train_patches": self.train_patches >= 1, "test_patches": self.test_patches >= 1,
                  "reference_batch": self.reference_batch >= 1, "patience": self.patience >= 0,
                  "ranking_alpha": self.ranking_alpha >= 0, "weight_decay": self.weight_decay >= 0,
                  "dropout": 0 <= self.dropout < 1, "workers": self.workers >= 0,
                  "save_every": self.save_every >= 0, "warmup_epochs": self.warmup_epochs >= 0,
                  "train_eval_images": self.train_eval_images >= 1, "step_size": self.step_size >= 1,
                  "step_gamma": self.step_gamma > 0, "ranking_margin": self.ranking_margin >= 0,
                  "drop_path": self.drop_path is None or 0 <= self.drop_path < 1}
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


def _accepts_float(annotation: Any) -> bool:
    return annotation is float or float in typing.get_args(annotation)


def _coerce(key: str, value: Any, annotation: Any, source: str = "config") -> Any:
    """Accept a scalar where a list is expected (``seeds: 0``), ints for floats, and numeric
    strings for floats (YAML 1.1 reads ``lr: 1e-4`` -- no dot -- as the string '1e-4')."""
    origin = typing.get_origin(annotation)
    if origin is list and not isinstance(value, list):
        value = [value]
    if isinstance(value, str) and _accepts_float(annotation):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            value = number
    if not _type_ok(value, annotation):
        shown = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
        name = shown.replace("typing.", "")
        where = f"{source}: " if source != "config" else ""
        raise LandscapeError(f"{where}config key '{key}': expected {name}, got {type(value).__name__} {value!r}")
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
        if key == "test_crops":
            check_choice(f"{source}: test_crops", value, TEST_CROPS)
            value = value == "random"
        if key == "split_ratio" and isinstance(value, str):
            value = list(parse_ratios(value, f"{source}: split_ratio"))
        key = ALIASES.get(key, key)
        if key not in known:
            raise LandscapeError(f"{source}: unknown key '{raw_key}'")
        if key in out:
            raise LandscapeError(f"{source}: key '{raw_key}' given twice (also as {key})")
        out[key] = _coerce(str(raw_key), value, hints[key], source)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config into validated overrides."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LandscapeError(f"{path}: config file is not UTF-8 text (byte {e.start}: {e.reason})") from None
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
    """Defaults < the model's recipe (:data:`landscape.train.recipes.RECIPES`) < config file < command line (``None`` on
    the command line = not given)."""
    merged = dict(file_values)
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    merged = {**recipe(str(merged.get("model", TrainConfig.model))), **merged}
    return TrainConfig(**config_from_mapping(merged)).validate()


# records derived from the inputs (not settings) that earlier versions did not write
_DERIVED = ("pretrained_matched_keys", "pretrained_dropped_keys", "pretrained_sha256")


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between a recorded config (``sweep.json``, ``config.json``) and
    the current one. A record written before a key existed counts as holding that key's
    :class:`TrainConfig` default (what the older version did), its ``split_seed: N`` as
    ``split_seeds: [N]``, and a missing derived record (``pretrained_*``) as no difference; so
    older sweeps resume unchanged."""
    old = dict(recorded)
    if "split_seed" in old and "split_seeds" not in old and "split_seed" not in current:
        old["split_seeds"] = [old.pop("split_seed")]
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in fields(TrainConfig)}
    diff = []
    for key in sorted(set(old) | set(current)):
        if key in old and key in current:
            same = old[key] == current[key]
        elif key in current:
            same = key in _DERIVED or (key in defaults and current[key] == defaults[key])
        else:
            same = False
        if not same:
            diff.append(key)
    return diff
