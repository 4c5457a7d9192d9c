"""Checkpoints that rebuild their model from the file alone, loaded without running pickled code.

File layout (a plain dict of tensors, numbers and strings; ``torch.save``):
``{"format": "landscape-checkpoint-v1", "model_config": {...}, "state_dict": {...},
"content_hash": sha256 over the state dict (see provenance.hash_state), "meta": {...}}``.
``meta`` holds the run's config, epoch and metrics. Loading uses
``torch.load(weights_only=True)``: a file carrying a pickled code payload is refused.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.errors import CheckpointError
from landscape.models import SwinIQA, SwinIQAConfig, create_model
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
        torch.save(payload, tmp)
    return digest


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
    if verify and hash_state(state) != payload["content_hash"]:
        raise CheckpointError(f"{path}: content hash mismatch (file modified or corrupt)")
    return Checkpoint(path, payload["model_config"], state, payload["content_hash"], payload.get("meta", {}))


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


def build_model(checkpoint: Checkpoint) -> SwinIQA:
    """Rebuild the model from the checkpoint's config and load its weights (eval mode)."""
    config = SwinIQAConfig.from_dict(dict(checkpoint.model_config))
    model = create_model(config)
    load_state_strict(model, checkpoint.state_dict, str(checkpoint.path))
    return model.eval()
