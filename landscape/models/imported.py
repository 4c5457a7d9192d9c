"""Models trained elsewhere: a description that rebuilds them, and the wrapper that puts
their outputs on the toolkit's normalised score scale.

A model description is a plain dict stored as a checkpoint's ``model_config`` (so
:func:`landscape.models.checkpoint.build_model` can rebuild the model from the file alone):

- ``{"family": "factory", "factory": {"spec", "kind", "module", "file", "function",
  "source_sha256"}, "img_size", "score_range"}``: the user's own function, importable as
  ``MODULE:FUNCTION`` (from ``sys.path``) or ``path/to/file.py:FUNCTION``, called with no
  arguments and returning an ``nn.Module``. The source file's sha256 is recorded at import;
  rebuilding refuses a file whose hash has changed (the code that runs is the code declared).
- ``{"family": "timm", "timm": {"name", "kwargs", "head", "head_hidden", "dropout"},
  "img_size", "score_range"}``: ``timm.create_model(name, pretrained=False, **kwargs)``
  with the toolkit's regression head (``head="landscape"``: ``num_classes=0`` pooled
  features -> Dropout -> Linear(hidden) -> GELU -> Dropout -> Linear(1), the layout of
  :class:`landscape.models.swin_iqa.SwinIQA`) or the model's own classifier with one
  output (``head="own"``: ``num_classes=1``).

The wrapper :class:`ImportedIQA` maps the network's output ``g(x)`` (in the declared
score range ``[lo, hi]``) to ``f(x) = (g(x) - lo) / (hi - lo)``, one scalar per image
(shape ``[B]``): the same normalisation the trainer applies to targets
(:func:`landscape.train.pipeline.normalise`), so losses, Hessians and sharpness of an
imported model are in the same units as those of a trained run. SRCC/PLCC/KRCC are
invariant to this positive affine map.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from landscape.errors import CheckpointError, LandscapeError, check_choice
from landscape.provenance import sha256_file as sha256_of

FAMILIES = ("factory", "timm")
HEADS = ("landscape", "own")


@dataclass(frozen=True)
class ImportedConfig:
    """What the toolkit's pipelines read from ``model.config`` (crop size in px, output range)."""

    img_size: int
    score_range: tuple[float, float]
    family: str


class ImportedIQA(nn.Module):
    """``f(x) = (net(x) - lo) / (hi - lo)`` reshaped to ``[B]`` (module docstring)."""

    def __init__(self, net: nn.Module, img_size: int, score_range: tuple[float, float], family: str):
        super().__init__()
        lo, hi = float(score_range[0]), float(score_range[1])
        if not hi > lo:
            raise LandscapeError(f"--score-range {lo:g}:{hi:g}: need LO < HI")
        self.net = net
        self.config = ImportedConfig(int(img_size), (lo, hi), family)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if not isinstance(out, torch.Tensor) or out.numel() != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LandscapeError(f"imported model returned {shape} for {x.shape[0]} images; "
                                 f"expected one score per image ([B] or [B, 1])")
        lo, hi = self.config.score_range
        return (out.reshape(x.shape[0]) - lo) / (hi - lo)


class TimmRegressor(nn.Module):
    """timm backbone (pooled features, ``num_classes=0``) + the toolkit's regression head."""

    def __init__(self, backbone: nn.Module, head_hidden: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, head_hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(-1)


# ----------------------------------------------------------------------------- factories

def parse_factory(spec: str) -> dict[str, Any]:
    """``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION`` -> the factory record (without running it).

    The record names the resolved source file (absolute path) and its sha256.
    """
    target, sep, function = str(spec).rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise LandscapeError(f"--factory {spec!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    if target.endswith(".py"):
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise LandscapeError(f"--factory {spec!r}: file {file} not found")
        return {"spec": str(spec), "kind": "file", "module": None, "file": str(file), "function": function,
                "source_sha256": sha256_of(file)}
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError) as e:
        raise LandscapeError(f"--factory {spec!r}: cannot find module {target!r} ({e})") from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise LandscapeError(f"--factory {spec!r}: module {target!r} not found on sys.path")
    return {"spec": str(spec), "kind": "module", "module": target, "file": str(Path(found.origin).resolve()),
            "function": function, "source_sha256": sha256_of(found.origin)}


def _check_source(record: dict[str, Any]) -> None:
    """Refuse a factory whose source file is gone or differs from the one hashed at import."""
    current = parse_factory(record["spec"] if record["kind"] == "module" else f"{record['file']}:{record['function']}")
    if current["file"] != record["file"] or current["source_sha256"] != record["source_sha256"]:
        raise CheckpointError(f"factory {record['spec']}: source {current['file']} (sha256 "
                              f"{current['source_sha256'][:12]}) is not the one recorded at import ({record['file']}, "
                              f"sha256 {record['source_sha256'][:12]}); re-import the checkpoint")


def _load_function(record: dict[str, Any]) -> Callable[[], Any]:
    name = record["function"]
    try:
        if record["kind"] == "file":
            modname = f"_landscape_factory_{record['source_sha256'][:16]}"
            module = sys.modules.get(modname)
            if module is None:
                spec = importlib.util.spec_from_file_location(modname, record["file"])
                module = importlib.util.module_from_spec(spec)
                sys.modules[modname] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[modname]
                    raise
        else:
            module = importlib.import_module(record["module"])
    except Exception as e:
        raise CheckpointError(f"factory {record['spec']}: importing {record['file']} failed "
                              f"({type(e).__name__}: {_first_line(e)})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise CheckpointError(f"factory {record['spec']}: {record['file']} defines no function {name!r}")
    return fn


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def call_factory(record: dict[str, Any]) -> nn.Module:
    """Run the declared factory (after checking its source hash); it must return an ``nn.Module``."""
    _check_source(record)
    fn = _load_function(record)
    try:
        net = fn()
    except Exception as e:
        raise CheckpointError(f"factory {record['spec']} failed: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(net, nn.Module):
        raise CheckpointError(f"factory {record['spec']} returned {type(net).__name__}, not a torch.nn.Module")
    return net


# ----------------------------------------------------------------------------- timm

def timm_network(name: str, head: str, *, img_size: int | None = None, head_hidden: int = 256,
                 dropout: float = 0.0, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The timm network of a ``timm`` description (random init; weights come from the checkpoint)."""
    import timm

    check_choice("timm head", head, HEADS)
    extra = dict(kwargs or {})
    if img_size is not None:
        extra["img_size"] = int(img_size)
    try:
        if head == "landscape":
            return TimmRegressor(timm.create_model(name, pretrained=False, num_classes=0, **extra),
                                 int(head_hidden), float(dropout))
        return timm.create_model(name, pretrained=False, num_classes=1, **extra)
    except Exception as e:   # unknown name, unsupported kwarg (e.g. img_size for a CNN), ...
        raise LandscapeError(f"--timm {name}: cannot build the model ({type(e).__name__}: {_first_line(e)})") from None


def timm_input_size(net: nn.Module, default: int = 224) -> int:
    """Input size (px) a timm model declares in its ``pretrained_cfg`` (``default`` if none)."""
    inner = getattr(net, "backbone", net)
    size = (getattr(inner, "pretrained_cfg", None) or {}).get("input_size")
    return int(size[-1]) if size else default


# ----------------------------------------------------------------------------- descriptions

def describe(family: str, *, img_size: int, score_range: tuple[float, float], factory: dict[str, Any] | None = None,
             timm: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``model_config`` dict of an imported model (module docstring)."""
    check_choice("model family", family, FAMILIES)
    desc = {"family": family, "img_size": int(img_size), "score_range": [float(score_range[0]), float(score_range[1])]}
    desc[family] = dict(factory if family == "factory" else timm)
    return desc


def build_network(desc: dict[str, Any]) -> nn.Module:
    """The bare network of a description (no wrapper, random weights)."""
    family = desc.get("family")
    if family == "factory":
        return call_factory(desc["factory"])
    if family == "timm":
        t = desc["timm"]
        return timm_network(t["name"], t["head"], img_size=t.get("img_size"), head_hidden=t.get("head_hidden", 256),
                            dropout=t.get("dropout", 0.0), kwargs=t.get("kwargs"))
    raise CheckpointError(f"model config family {family!r} is not an imported model ({', '.join(FAMILIES)})")


def build_described(desc: dict[str, Any]) -> ImportedIQA:
    """Rebuild an imported model from its description (weights not loaded, eval mode)."""
    net = build_network(desc)
    lo, hi = desc["score_range"]
    return ImportedIQA(net, desc["img_size"], (lo, hi), desc["family"]).eval()


def is_imported(model_config: dict[str, Any]) -> bool:
    return model_config.get("family") in FAMILIES
