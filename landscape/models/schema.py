"""Schema of a checkpoint's ``model_config``: checked before anything is built.

A checkpoint is untrusted input. Its ``model_config`` decides what is allocated and which
arguments reach ``timm.create_model``; so every key is declared here with its type and range,
and a config that does not fit is refused with one line naming the file, the key and the limit
(:class:`landscape.errors.CheckpointError`).

Families (``model_config["family"]``):

- ``swin_iqa`` (or absent: files of older versions): :class:`landscape.models.swin_iqa.SwinIQAConfig`.
  Sizes are bounded: ``img_size`` in [16, 2048] px, ``embed_dim`` in [1, 4096], 1-8 stages of
  depth 1-64, an optional ``stem_channels`` list of 1-8 widths in [1, 1024] (even ``img_size``
  and ``patch_size`` when it has two or more), heads dividing each stage width ``embed_dim * 2**i``, ``head_hidden`` <= 65536,
  and the backbone's estimated parameter count ``sum_i 12 * depth_i * (embed_dim * 2**i)**2``
  (attention 4C^2 + MLP 8C^2 per block at ``mlp_ratio`` 4) at most :data:`MAX_PARAMS`
  (Swin-B: about 8.4e7). ``extra`` (further ``timm`` arguments) may hold only the keys of
  :data:`EXTRA_KEYS` (dropout rates, ``mlp_ratio``, ``qkv_bias``, ``head_dim``); nothing in a
  checkpoint can name a file or turn on pretrained loading.
- ``factory`` / ``timm``: imported models (:mod:`landscape.models.imported`); the factory
  record's fields are typed; the timm record holds only :data:`TIMM_RECORD_KEYS`; its ``kwargs``
  are scalars (the dropout rates of :data:`TIMM_RATE_KWARGS` in [0, 1)) and may not hold any of
  :data:`TIMM_LOADING_KEYS` (``pretrained``, ``pretrained_cfg``, ``checkpoint_path``, ...).
  Models trained with ``--model timm:NAME`` (:mod:`landscape.models.trainable`) are stored in
  this family too (``score_range [0, 1]``).
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Any, Mapping

from landscape.errors import CheckpointError

MAX_PARAMS = 1_000_000_000          # about 4 GB of float32 weights
MAX_IMG_SIZE = 2048
MAX_EMBED_DIM = 4096
MAX_STAGES = 8
MAX_DEPTH = 64
MAX_HEAD_HIDDEN = 65536

SWIN_NAME = re.compile(r"^swin_[a-z0-9]+_patch\d+_window\d+_\d+$")
TIMM_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

# extra timm arguments a swin_iqa config may carry: key -> (kind, low, high)
EXTRA_KEYS: dict[str, tuple[str, float, float]] = {
    "mlp_ratio": ("float", 0.25, 16.0),
    "qkv_bias": ("bool", 0, 1),
    "drop_rate": ("rate", 0.0, 1.0),
    "proj_drop_rate": ("rate", 0.0, 1.0),
    "attn_drop_rate": ("rate", 0.0, 1.0),
    "head_dim": ("int", 1, 1024),
}
TIMM_LOADING_KEYS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict",
                     "checkpoint_path", "cache_dir", "file", "url", "hf_hub_id", "features_only", "scriptable",
                     "exportable", "no_jit")

TIMM_RECORD_KEYS = ("name", "kwargs", "head", "head_hidden", "dropout", "img_size")
TIMM_RATE_KWARGS = ("drop_path_rate", "drop_rate", "proj_drop_rate", "attn_drop_rate")   # in [0, 1)

SWIN_KEYS = ("preset", "timm_name", "img_size", "patch_size", "window_size", "embed_dim", "depths", "num_heads",
             "drop_path_rate", "dropout", "head_hidden", "extra", "family", "stem_channels")
MAX_STEM_WIDTH = 1024


def _fail(source: str, key: str, value: Any, need: str) -> None:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise CheckpointError(f"{source}: model_config {key}={shown}: {need}")


def _int(source: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        _fail(source, key, value, f"need an integer between {low} and {high}")
    return int(value)


def _float(source: str, key: str, value: Any, low: float, high: float, *, open_high: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
          and low <= float(value) and (float(value) < high if open_high else float(value) <= high))
    if not ok:
        _fail(source, key, value, f"need a number in [{low:g}, {high:g}{')' if open_high else ']'}")
    return float(value)


def _str(source: str, key: str, value: Any, pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or (pattern and not pattern.match(value)):
        _fail(source, key, value, "need a name" + (f" matching {pattern.pattern}" if pattern else ""))
    return value


def _int_list(source: str, key: str, value: Any, low: int, high: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_STAGES:
        _fail(source, key, value, f"need a list of 1 to {MAX_STAGES} integers")
    return [_int(source, f"{key}[{i}]", v, low, high) for i, v in enumerate(value)]


def estimated_params(embed_dim: int, depths: list[int], mlp_ratio: float = 4.0) -> int:
    """``sum_i depth_i * (4 + 2 * mlp_ratio) * C_i**2`` with ``C_i = embed_dim * 2**i`` (module docstring)."""
    return int(sum(d * (4 + 2 * mlp_ratio) * (embed_dim * 2 ** i) ** 2 for i, d in enumerate(depths)))


def check_extra(source: str, extra: Any) -> dict[str, Any]:
    """``extra`` restricted to :data:`EXTRA_KEYS` with typed values."""
    if not isinstance(extra, Mapping):
        _fail(source, "extra", extra, "need a mapping")
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key not in EXTRA_KEYS:
            raise CheckpointError(f"{source}: model_config extra key {key!r} is not allowed "
                                  f"(allowed: {', '.join(EXTRA_KEYS)})")
        kind, low, high = EXTRA_KEYS[key]
        name = f"extra.{key}"
        if kind == "bool":
            if not isinstance(value, bool):
                _fail(source, name, value, "need true or false")
            out[key] = value
        elif kind == "int":
            out[key] = None if value is None else _int(source, name, value, int(low), int(high))
        else:
            out[key] = _float(source, name, value, low, high, open_high=kind == "rate")
    return out


def check_swin_config(d: Any, source: str = "checkpoint") -> dict[str, Any]:
    """A validated copy of a ``swin_iqa`` config dict (module docstring); raises :class:`CheckpointError`."""
    if not isinstance(d, Mapping):
        raise CheckpointError(f"{source}: model_config is {type(d).__name__}, need a mapping")
    unknown = sorted(str(k) for k in set(d) - set(SWIN_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: model config has unknown keys: {', '.join(unknown)}")
    for key in ("preset", "timm_name", "depths", "num_heads"):
        if key not in d:
            raise CheckpointError(f"{source}: model_config lacks required key '{key}'")
    out: dict[str, Any] = {"preset": _str(source, "preset", d["preset"]),
                           "timm_name": _str(source, "timm_name", d["timm_name"], SWIN_NAME)}
    img = out["img_size"] = _int(source, "img_size", d.get("img_size", 224), 16, MAX_IMG_SIZE)
    out["patch_size"] = _int(source, "patch_size", d.get("patch_size", 4), 1, img)
    out["window_size"] = _int(source, "window_size", d.get("window_size", 7), 1, img)
    dim = out["embed_dim"] = _int(source, "embed_dim", d.get("embed_dim", 96), 1, MAX_EMBED_DIM)
    depths = _int_list(source, "depths", d["depths"], 1, MAX_DEPTH)
    heads = _int_list(source, "num_heads", d["num_heads"], 1, 1024)
    if len(heads) != len(depths):
        raise CheckpointError(f"{source}: model_config num_heads has {len(heads)} stages but depths {len(depths)}")
    for i, h in enumerate(heads):
        if (dim * 2 ** i) % h:
            raise CheckpointError(f"{source}: model_config num_heads[{i}]={h} does not divide the stage width "
                                  f"{dim * 2 ** i} (embed_dim * 2**{i})")
    out["depths"], out["num_heads"] = depths, heads
    if "drop_path_rate" in d:
        out["drop_path_rate"] = _float(source, "drop_path_rate", d["drop_path_rate"], 0.0, 1.0, open_high=True)
    if "dropout" in d:
        out["dropout"] = _float(source, "dropout", d["dropout"], 0.0, 1.0, open_high=True)
    if "head_hidden" in d:
        out["head_hidden"] = _int(source, "head_hidden", d["head_hidden"], 1, MAX_HEAD_HIDDEN)
    out["extra"] = check_extra(source, d.get("extra", {}))
    stem = d.get("stem_channels", [])
    stem = [] if isinstance(stem, (list, tuple)) and not stem else _int_list(source, "stem_channels", stem, 1,
                                                                              MAX_STEM_WIDTH)
    if len(stem) >= 2 and (img % 2 or out["patch_size"] % 2):
        raise CheckpointError(f"{source}: model_config stem_channels={stem} halves the input, so img_size "
                              f"({img}) and patch_size ({out['patch_size']}) must be even")
    out["stem_channels"] = stem
    n = estimated_params(dim, depths, out["extra"].get("mlp_ratio", 4.0))
    if n > MAX_PARAMS:
        raise CheckpointError(f"{source}: model_config embed_dim={dim}, depths={depths} means about {n:.2g} "
                              f"parameters; the limit is {MAX_PARAMS:.0e}")
    if "family" in d and d["family"] != "swin_iqa":
        _fail(source, "family", d["family"], "need 'swin_iqa', 'factory' or 'timm'")
    return out


def _check_imported(d: Mapping[str, Any], source: str) -> None:
    family = d["family"]
    _int(source, "img_size", d.get("img_size"), 16, MAX_IMG_SIZE)
    rng = d.get("score_range")
    if (not isinstance(rng, (list, tuple)) or len(rng) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in rng)
            or not rng[1] > rng[0]):
        _fail(source, "score_range", rng, "need two finite numbers LO < HI")
    rec = d.get(family)
    if not isinstance(rec, Mapping):
        _fail(source, family, rec, "need a mapping")
    if family == "factory":
        for key in ("spec", "file", "function"):
            _str(source, f"factory.{key}", rec.get(key))
        if rec.get("kind") not in ("file", "module"):
            _fail(source, "factory.kind", rec.get("kind"), "need 'file' or 'module'")
        if rec["kind"] == "module":
            _str(source, "factory.module", rec.get("module"))
        if not str(rec["function"]).isidentifier():
            _fail(source, "factory.function", rec["function"], "need a Python identifier")
        if not isinstance(rec.get("source_sha256"), str) or not SHA256.match(rec["source_sha256"]):
            _fail(source, "factory.source_sha256", rec.get("source_sha256"), "need a sha256 hex digest")
        return
    unknown = sorted(str(k) for k in set(rec) - set(TIMM_RECORD_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: model_config timm has unknown keys: {', '.join(unknown)}")
    _str(source, "timm.name", rec.get("name"), TIMM_NAME)
    if rec.get("head") not in ("landscape", "own"):
        _fail(source, "timm.head", rec.get("head"), "need 'landscape' or 'own'")
    _int(source, "timm.head_hidden", rec.get("head_hidden", 256), 1, MAX_HEAD_HIDDEN)
    _float(source, "timm.dropout", rec.get("dropout", 0.0), 0.0, 1.0, open_high=True)
    if rec.get("img_size") is not None:
        _int(source, "timm.img_size", rec["img_size"], 16, MAX_IMG_SIZE)
    kwargs = rec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        _fail(source, "timm.kwargs", kwargs, "need a mapping")
    for key, value in kwargs.items():
        named_file = "path" in str(key) or "file" in str(key) or "url" in str(key)
        if key in TIMM_LOADING_KEYS or (named_file and key not in TIMM_RATE_KWARGS):
            raise CheckpointError(f"{source}: model_config timm.kwargs key {key!r} is refused: a checkpoint may not "
                                  f"set timm's loading arguments ({', '.join(TIMM_LOADING_KEYS[:4])}, ...)")
        if key in TIMM_RATE_KWARGS:
            _float(source, f"timm.kwargs.{key}", value, 0.0, 1.0, open_high=True)
        plain = isinstance(value, (bool, numbers.Real)) or value is None or (
            isinstance(value, str) and len(value) <= 64 and "/" not in value and "\\" not in value)
        listed = isinstance(value, (list, tuple)) and len(value) <= 16 and all(
            isinstance(v, numbers.Real) for v in value)
        if not (plain or listed):
            _fail(source, f"timm.kwargs.{key}", value, "need a number, a bool, a short name or a list of numbers")


def check_model_config(d: Any, source: str = "checkpoint") -> dict[str, Any]:
    """Validate any family's ``model_config``; returns it (swin_iqa: the validated copy)."""
    if not isinstance(d, Mapping):
        raise CheckpointError(f"{source}: model_config is {type(d).__name__}, need a mapping")
    if d.get("family") in ("factory", "timm"):
        _check_imported(d, source)
        return dict(d)
    return {**check_swin_config(d, source), **({"family": d["family"]} if "family" in d else {})}
