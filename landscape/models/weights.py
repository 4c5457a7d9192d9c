"""Weights files from other code bases: read safely, unwrap, match every key to the model.

Formats: ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` read with ``torch.load(weights_only=True)``
(:func:`landscape.models.checkpoint.safe_load`: a file asking to run pickled code is
refused), ``.safetensors`` read with the ``safetensors`` package. Wrappers: a dict whose
``state_dict`` / ``model`` / ``model_state_dict`` / ``net`` / ``ema`` entry is the state
(nested, first found wins), and key prefixes ``module.`` (DataParallel/DDP), ``model.``,
``backbone.``, ``net.``, ``_orig_mod.`` (torch.compile) stripped when every key carries
them. A landscape checkpoint's own ``state_dict`` is read the same way.

Matching is strict: of the key layouts above, the one equal to the model's keys is
used; when none is, the refusal lists the missing and unexpected keys (and shape
mismatches) of the closest layout in one line.

``--pretrained FILE`` (backbone weights for training): :func:`check_pretrained` (before any
file is written) and :func:`load_pretrained` read the file the same way, pass each layout
through timm's checkpoint filter, drop a classifier head the backbone does not have, and
refuse unless every backbone key is matched and no other key is left
(:func:`match_pretrained`); the run records the matched count and the dropped keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from landscape.errors import CheckpointError
from landscape.models.checkpoint import load_state_strict, safe_load
from landscape.models.imported import ImportedIQA, build_network, describe, parse_factory, timm_input_size, timm_network
from landscape.provenance import sha256_file

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "module")
PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "net.")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


@dataclass
class ForeignWeights:
    """A state dict read from a file, with what the file declared beside it."""

    path: Path
    state: dict[str, torch.Tensor]
    sha256: str
    wrapper: list[str] = field(default_factory=list)      # dict entries walked into, e.g. ["state_dict"]
    declared: dict[str, Any] = field(default_factory=dict)  # e.g. {"score_range": [1, 5]} found in the file


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items())


def read_weights(path: str | Path) -> ForeignWeights:
    """Read a weights file into a flat ``{name: tensor}`` dict (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:   # safetensors raises SafetensorError / OSError for bad headers
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({str(e).splitlines()[0][:200]})") \
                from None
    elif path.suffix in TORCH_SUFFIXES:
        obj = safe_load(path, "weights file")
    else:
        raise CheckpointError(f"{path}: unknown weights format '{path.suffix}' (use .pth, .pt, .bin, .ckpt or "
                              f".safetensors)")
    declared: dict[str, Any] = {}
    wrapper: list[str] = []
    while not _is_state(obj):
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
        if "score_range" in obj and not declared.get("score_range"):
            declared["score_range"] = obj["score_range"]
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointError(f"{path}: no state dict found (top-level keys: "
                                      f"{', '.join(map(str, list(obj)[:8]))})")
            obj = tensors
            break
        wrapper.append(inner)
        obj = obj[inner]
    return ForeignWeights(path, dict(obj), sha256_file(path), wrapper, declared)


def key_layouts(state: dict[str, torch.Tensor]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """``(stripped prefixes, state)`` for the file's layout and each prefix strip that applies to every key."""
    out, frontier = [("", state)], [("", state)]
    while frontier:
        label, s = frontier.pop()
        for p in PREFIXES:
            if all(k.startswith(p) for k in s):
                t = {k[len(p):]: v for k, v in s.items()}
                out.append((label + p, t))
                frontier.append((label + p, t))
    return out


def _mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> int:
    return len(set(own) ^ set(state)) + sum(own[k].shape != state[k].shape for k in set(own) & set(state))


def match_state(model: nn.Module, weights: ForeignWeights) -> tuple[str, dict[str, torch.Tensor]]:
    """Load the layout of ``weights`` that matches ``model`` exactly; returns ``(stripped prefixes, state)``.

    Raises :class:`CheckpointError` naming missing/unexpected keys of the closest layout.
    """
    own = model.state_dict()
    layouts = key_layouts(weights.state)
    label, state = min(layouts, key=lambda t: _mismatch(own, t[1]))
    load_state_strict(model, state, str(weights.path))
    return label, state


@dataclass
class ImportedModel:
    """An imported, weight-loaded model with its rebuildable description."""

    model: ImportedIQA
    description: dict[str, Any]
    weights: ForeignWeights
    stripped: str
    score_range_source: str


def _score_range(declared: Any, weights: ForeignWeights, fallback: tuple[float, float] | None) -> tuple[tuple, str]:
    for value, source in ((declared, "declared"), (weights.declared.get("score_range"), "checkpoint"),
                          (fallback, "dataset")):
        if value is not None:
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise CheckpointError(f"score range {value!r} ({source}): expected two numbers LO, HI") from None
            if not hi > lo:
                raise CheckpointError(f"score range {lo:g}:{hi:g} ({source}): need LO < HI")
            return (lo, hi), source
    raise CheckpointError(f"{weights.path}: no score range declared (--score-range LO:HI) or stored in the file")


def _timm_head(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """``("landscape", hidden)`` when the keys hold the toolkit's head (``head.1``/``head.4``), else ``("own", 0)``."""
    for _, s in key_layouts(state):
        w1, w4 = s.get("head.1.weight"), s.get("head.4.weight")
        if w1 is not None and w4 is not None and w1.ndim == 2 and w4.shape[0] == 1 and \
                any(k.startswith("backbone.") for k in s):
            return "landscape", int(w1.shape[0])
    return "own", 0


def import_model(path: str | Path, *, factory: str | None = None, timm_name: str | None = None,
                 img_size: int | None = None, score_range: Any = None,
                 default_score_range: tuple[float, float] | None = None,
                 timm_kwargs: dict[str, Any] | None = None, dropout: float = 0.0) -> ImportedModel:
    """Build the declared model, load ``path``'s weights with strict key matching, wrap it.

    Exactly one of ``factory`` (``MODULE:FUNCTION`` / ``file.py:FUNCTION``) and ``timm_name``.
    ``img_size``: crop size of the test protocol (and timm's ``img_size`` argument when given);
    default the timm model's declared input size, or 224 for a factory. The score range is
    ``score_range`` if given, else the file's ``score_range`` entry, else ``default_score_range``
    (the dataset's). The model is in eval mode on CPU.
    """
    if (factory is None) == (timm_name is None):
        raise CheckpointError("declare how to build the model: exactly one of --factory MODULE:FUNCTION and "
                              "--timm NAME")
    weights = read_weights(path)
    rng, rng_source = _score_range(score_range, weights, default_score_range)
    if factory is not None:
        record = parse_factory(factory)
        size = int(img_size) if img_size else 224
        desc = describe("factory", img_size=size, score_range=rng, factory=record)
        net = build_network(desc)
    else:
        head, hidden = _timm_head(weights.state)
        spec = {"name": timm_name, "kwargs": dict(timm_kwargs or {}), "head": head,
                "head_hidden": hidden or 256, "dropout": float(dropout)}
        if img_size:
            spec["img_size"] = int(img_size)
        net = timm_network(timm_name, head, img_size=spec.get("img_size"), head_hidden=spec["head_hidden"],
                           dropout=spec["dropout"], kwargs=spec["kwargs"])
        size = int(img_size) if img_size else timm_input_size(net)
        desc = describe("timm", img_size=size, score_range=rng, timm=spec)
    stripped, _ = match_state(net, weights)
    model = ImportedIQA(net, desc["img_size"], rng, desc["family"]).eval()
    return ImportedModel(model, desc, weights, stripped, rng_source)


# ---------------------------------------------------------------- --pretrained backbone weights

HEAD_PREFIXES = ("head.fc.", "head.", "fc.", "classifier.")   # classifier heads a backbone file may carry
SHOW_KEYS = 4                                                   # keys named per list in a refusal


@dataclass(frozen=True)
class PretrainedMatch:
    """How a ``--pretrained`` file fits a backbone: every backbone key matched (else refused).

    ``matched``: backbone keys loaded from the file (= all of the backbone's state-dict keys);
    ``dropped``: classifier-head keys of the file left out (absent from a ``num_classes=0``
    backbone, or of another shape); ``stripped``: key prefixes removed (``module.`` ...).
    """

    path: str
    sha256: str
    matched: int
    dropped: tuple[str, ...] = ()
    stripped: str = ""

    def record(self) -> dict[str, Any]:
        """The entries ``config.json`` records: ``pretrained_matched_keys`` (count),
        ``pretrained_dropped_keys`` (names) and ``pretrained_sha256`` (the file's content hash)."""
        return {"pretrained_matched_keys": self.matched, "pretrained_dropped_keys": list(self.dropped),
                "pretrained_sha256": self.sha256}

    def describe(self) -> str:
        """One log line: the file, the matched count, what was dropped."""
        drop = (f"; dropped the classifier head ({len(self.dropped)} keys: {_some(sorted(self.dropped))})"
                if self.dropped else "")
        strip = f"; stripped prefix {self.stripped}" if self.stripped else ""
        return f"pretrained {self.path}: all {self.matched} backbone keys matched{drop}{strip}"


def _some(keys: list[str], n: int = SHOW_KEYS) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _timm_filter(backbone: nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``state`` through the ``checkpoint_filter_fn`` of the backbone's timm module (old key layouts
    remapped, relative-position tables and patch embeddings resized, non-persistent buffers removed);
    unchanged when the module has none."""
    import sys

    fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return dict(fn(dict(state), backbone))
    except Exception as e:   # timm filters raise KeyError/RuntimeError/... on foreign layouts
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: timm's checkpoint filter for {type(backbone).__name__} failed "
                              f"({type(e).__name__}: {msg[:200]})") from None


def _fit(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> tuple[dict, list[str], list[str],
                                                                                  list[str], list[str]]:
    """``(kept state, dropped head keys, missing, unexpected, shape mismatches)`` of ``state`` against ``own``."""
    def head(k: str) -> bool:
        return k.startswith(HEAD_PREFIXES) and (k not in own or own[k].shape != state[k].shape)

    dropped = sorted(k for k in state if head(k))
    kept = {k: v for k, v in state.items() if k not in dropped}
    missing = sorted(set(own) - set(kept))
    unexpected = sorted(set(kept) - set(own))
    shapes = sorted(f"{k} {tuple(kept[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(kept)
                    if kept[k].shape != own[k].shape)
    return kept, dropped, missing, unexpected, shapes


def match_pretrained(backbone: nn.Module, weights: ForeignWeights) -> tuple[PretrainedMatch, dict[str, torch.Tensor]]:
    """Fit ``weights`` to ``backbone`` (keys and shapes only; ``backbone`` may live on the meta device).

    Of the file's key layouts (:func:`key_layouts`, each through timm's checkpoint filter) the one
    closest to the backbone is used; its classifier-head keys (:data:`HEAD_PREFIXES`) that the
    backbone lacks or holds with another shape are dropped. Every backbone key must then be
    present with its shape and no other key left: else one :class:`CheckpointError` line with the
    matched count and the first missing, unexpected and mismatched keys (with counts). A file
    matching nothing is refused as such (it would silently train from random init).
    """
    own = backbone.state_dict()
    name = type(backbone).__name__
    best, failed = None, None
    for label, layout in key_layouts(weights.state):
        try:                       # a layout the filter cannot read (unstripped prefixes, ...) does not fit
            fit = _fit(own, _timm_filter(backbone, layout, weights.path))
        except CheckpointError as e:
            failed = failed or e
            continue
        score = len(fit[2]) + len(fit[3]) + len(fit[4])
        if best is None or score < best[0]:
            best = (score, label, fit)
    if best is None:
        raise failed
    _, label, (kept, dropped, missing, unexpected, shapes) = best
    matched = len(own) - len(missing) - len(shapes)
    if matched == 0:
        raise CheckpointError(f"{weights.path}: no key matches the {name} backbone (file: {len(weights.state)} keys, "
                              f"e.g. {_some(sorted(weights.state))}; backbone: {len(own)} keys, e.g. "
                              f"{_some(list(own))}); refusing to train from random init")
    if missing or unexpected or shapes:
        parts = [f"missing {len(missing)} ({_some(missing)})" if missing else "",
                 f"unexpected {len(unexpected)} ({_some(unexpected)})" if unexpected else "",
                 f"shape mismatch {len(shapes)} ({_some(shapes, 2)})" if shapes else ""]
        raise CheckpointError(f"{weights.path}: does not fit the {name} backbone: {matched} of {len(own)} keys "
                              f"matched; {'; '.join(p for p in parts if p)}")
    return PretrainedMatch(str(weights.path), weights.sha256, matched, tuple(dropped), label), kept


def check_pretrained(make_backbone: Callable[[], nn.Module], path: str | Path) -> PretrainedMatch:
    """Check ``path`` against the backbone ``make_backbone()`` builds, before anything is written.

    The backbone is built on the meta device (no memory, no draw from torch's RNG), the file read
    safely (:func:`read_weights`) and matched (:func:`match_pretrained`); nothing is loaded.
    """
    weights = read_weights(path)
    with torch.device("meta"):
        backbone = make_backbone()
    return match_pretrained(backbone, weights)[0]


def load_pretrained(backbone: nn.Module, path: str | Path) -> PretrainedMatch:
    """Load ``path`` into ``backbone`` after :func:`match_pretrained` accepted it (strict: every key)."""
    match, state = match_pretrained(backbone, read_weights(path))
    backbone.load_state_dict(state, strict=True)
    return match
