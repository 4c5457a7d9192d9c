"""Checkpoints that rebuild their model from the file alone, loaded without running pickled code.

File layout (a plain dict of tensors, numbers and strings; ``torch.save``):
``{"format": "landscape-checkpoint-v1", "model_config": {...}, "state_dict": {...},
"content_hash": sha256 over the state dict (see provenance.hash_state), "meta": {...}}``.
``meta`` holds the run's config, epoch and metrics. Loading uses
``torch.load(weights_only=True)``: a file carrying a pickled code payload is refused.
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.errors import CheckpointError
from landscape.models import SwinIQAConfig, create_model
from landscape.models.schema import check_model_config
from landscape.provenance import hash_state, sha256_file
from landscape.store import atomic_path

FORMAT = "landscape-checkpoint-v1"


@dataclass
class Checkpoint:
    path: Path
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    content_hash: str
    meta: dict[str, Any]

    @property
    def file_sha256(self) -> str:
        return sha256_file(self.path)


def save_checkpoint(path: str | Path, model: nn.Module, model_config: dict[str, Any],
                    meta: dict[str, Any] | None = None) -> str:
    """Atomically write ``model``'s state with its construction config; returns the content hash."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = hash_state(state)
    payload = {"format": FORMAT, "model_config": model_config, "state_dict": state,
               "content_hash": digest, "meta": meta or {}}
    with atomic_path(path) as tmp:
        save_torch(payload, tmp, path)
    return digest


def save_torch(payload: Any, tmp: Path, path: str | Path) -> None:
    """``torch.save`` whose write failures become an ``OSError`` naming ``path`` (the CLI prints it as
    one line; the temp file is removed by ``atomic_path``). Torch's zip writer reports a full disk as a
    ``RuntimeError`` ("file write failed", or "unexpected pos N vs M" when the end record does not
    fit): ENOSPC when under 1 MiB is left on the device, EIO otherwise."""
    try:
        torch.save(payload, tmp)
    except RuntimeError as e:
        text = str(e)
        if not any(s in text.lower() for s in ("write", "unexpected pos", "inline_container")):
            raise
        free = shutil.disk_usage(Path(tmp).parent).free
        code = errno.ENOSPC if free < (1 << 20) else errno.EIO
        raise OSError(code, f"{os.strerror(code)} (writing failed: {text.splitlines()[0][:120]})",
                      str(path)) from None


_TORCH_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _reason(e: BaseException) -> str:
    """The informative sentence of a ``torch.load`` error (torch wraps it in advice paragraphs)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.lower().startswith(_TORCH_BOILERPLATE)]
    text = (useful or lines or [type(e).__name__])[0]
    text = text.split(". ")[0].rstrip(".")
    return text[:200]


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU with one-line errors for missing, unsafe or corrupt files.

    Only tensors and plain containers are unpickled; a file that asks for anything else
    (e.g. ``os.system``) is refused before any of its code can run.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():   # torch warns about pickle protocols before refusing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _reason(e)
        if "global" in reason.lower():      # the pickle asks to import a callable: code
            raise CheckpointError(f"{path}: refused: not a plain-tensor {what}; safe (weights_only) "
                                  f"loading stopped at: {reason}") from None
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({path.stat().st_size} bytes; "
                              f"safe loading stopped at: {reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({path.stat().st_size} bytes; "
                              f"{_reason(e)})") from None


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Load and validate a checkpoint; ``verify`` recomputes the content hash."""
    path = Path(path)
    payload = safe_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a landscape checkpoint (missing format '{FORMAT}')")
    for key in ("model_config", "state_dict", "content_hash"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    state = payload["state_dict"]
    check_state_dict(state, f"{path}: state_dict")
    if not isinstance(payload["content_hash"], str):
        raise CheckpointError(f"{path}: content_hash is {type(payload['content_hash']).__name__}, need a string")
    meta = payload.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: meta is {type(meta).__name__}, need a mapping")
    check_meta(meta, path)
    check_model_config(payload["model_config"], str(path))      # before anything is built or hashed
    if verify and hash_state(state) != payload["content_hash"]:
        raise CheckpointError(f"{path}: content hash mismatch (file modified or corrupt)")
    return Checkpoint(path, payload["model_config"], state, payload["content_hash"], meta)


def check_state_dict(state: Any, what: str) -> None:
    """``state`` is a mapping of string names to tensors, else one-line :class:`CheckpointError`."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} is {type(state).__name__}, need a mapping of names to tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{what}: entry {str(key)[:80]!r} is {type(value).__name__}, need a tensor")


_META_NUMBERS = ("ranking_alpha", "ranking_margin", "lr", "run_lr", "weight_decay")


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """The run config stored in ``meta["config"]`` (read by the analyses): numeric loss settings."""
    config = meta.get("config")
    if config is None:
        return
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: meta config is {type(config).__name__}, need a mapping")
    for key in _META_NUMBERS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise CheckpointError(f"{path}: meta config {key}={value!r}: need a finite number")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that lists missing/unexpected keys and shape mismatches in one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"{source}: does not match the model architecture; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def build_model(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the model from the checkpoint's config and load its weights (eval mode).

    ``model_config["family"]``: ``swin_iqa`` (or absent: files of older versions) is a
    :class:`SwinIQAConfig`; ``factory`` / ``timm`` describe an imported model
    (:mod:`landscape.models.imported`; a factory whose source file changed is refused).
    """
    if checkpoint.model_config.get("family") in ("factory", "timm"):
        from landscape.models.imported import build_described

        model = build_described(dict(checkpoint.model_config))
        load_state_strict(model, checkpoint.state_dict, str(checkpoint.path))
        return model.eval()
    config = SwinIQAConfig.from_dict(dict(checkpoint.model_config), str(checkpoint.path))
    try:
        model = create_model(config)
    except (AssertionError, ValueError, TypeError, RuntimeError) as e:   # timm's own checks of the sizes
        raise CheckpointError(f"{checkpoint.path}: cannot build the model of its model_config "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    load_state_strict(model, checkpoint.state_dict, str(checkpoint.path))
    return model.eval()
