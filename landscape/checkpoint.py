"""Checkpoints that rebuild their model from the file alone, loaded without running pickled code.

File layout (a plain dict of tensors, numbers and strings; ``torch.save``):
``{"format": "landscape-checkpoint-v1", "model_config": {...}, "state_dict": {...},
"content_hash": sha256 over the state dict (see provenance.hash_state), "meta": {...}}``.
``meta`` holds the run's config, epoch and metrics. Loading uses
``torch.load(weights_only=True)``: a file carrying a pickled code payload is refused.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .models import SwinIQA, SwinIQAConfig, create_model
from .provenance import hash_state, sha256_file
from .store import atomic_path

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


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` on CPU with one-line errors for missing, unsafe or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused: the file holds pickled objects or code that "
                                  f"weights_only loading does not allow ({first[:160]})") from None
        raise CheckpointError(f"{path}: corrupt {what} ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({first[:160]})") from None


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
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
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
