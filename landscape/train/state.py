"""The resume point ``train_state.pt``: its format and the checks made before a run resumes from it.

Layout (``torch.save`` of a plain dict, loaded with ``weights_only=True``)::

    {"format": "landscape-train-state-v2", "model": state dict, "optimizer": optimizer state dict
     ({"state", "param_groups"}), "scheduler": scheduler state dict, "history": [log record, ...],
     "epoch": last complete epoch (int >= 0), "best_val": selection key of the best epoch (float),
     "best_epoch": int or None, "bad_epochs": early-stopping counter (int >= 0)}

A file of another format version, with a missing key or a value of the wrong type is refused
with one line naming the file and the key (:class:`landscape.errors.CheckpointError`), before
any of it is loaded into the model or the optimizer.
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import torch

from landscape.errors import CheckpointError
from landscape.models.checkpoint import check_state_dict, load_state_strict, safe_load

STATE_FORMAT = "landscape-train-state-v2"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def read_train_state(path: str | Path) -> dict[str, Any]:
    """Load ``path`` safely and validate it against the layout of the module docstring."""
    path = Path(path)
    state = safe_load(path, "training state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: training state is {type(state).__name__}, need a mapping "
                              f"(format {STATE_FORMAT})")
    fmt = state.get("format")
    if fmt != STATE_FORMAT:
        raise CheckpointError(f"{path}: training state format {fmt!r} is not {STATE_FORMAT!r}; "
                              f"delete the file to retrain the run from the start")
    for key in ("model", "optimizer", "scheduler", "history", "epoch", "best_val", "best_epoch", "bad_epochs"):
        if key not in state:
            raise CheckpointError(f"{path}: training state lacks '{key}'")
    check_state_dict(state["model"], f"{path}: training state model")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(
            opt.get("param_groups"), list):
        raise CheckpointError(f"{path}: training state optimizer is not an optimizer state dict "
                              f"(need a mapping with 'state' and 'param_groups')")
    if not isinstance(state["scheduler"], dict):
        raise CheckpointError(f"{path}: training state scheduler is {type(state['scheduler']).__name__}, "
                              f"need a mapping")
    epoch = state["epoch"]
    if not _is_int(epoch) or epoch < 0:
        raise CheckpointError(f"{path}: training state epoch={epoch!r}: need an integer >= 0")
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) and _is_int(h.get("epoch")) for h in history):
        raise CheckpointError(f"{path}: training state history is not a list of epoch records")
    if history and history[-1]["epoch"] != epoch:
        raise CheckpointError(f"{path}: training state epoch={epoch} but its history ends at epoch "
                              f"{history[-1]['epoch']}")
    best_val = state["best_val"]
    if isinstance(best_val, bool) or not isinstance(best_val, numbers.Real):
        raise CheckpointError(f"{path}: training state best_val={best_val!r}: need a number")
    if state["best_epoch"] is not None and not _is_int(state["best_epoch"]):
        raise CheckpointError(f"{path}: training state best_epoch={state['best_epoch']!r}: need an integer or None")
    if not _is_int(state["bad_epochs"]) or state["bad_epochs"] < 0:
        raise CheckpointError(f"{path}: training state bad_epochs={state['bad_epochs']!r}: need an integer >= 0")
    return state


def restore_train_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any) -> dict[str, Any]:
    """Validate ``path`` and load its model, optimizer and scheduler states; returns the state dict."""
    state = read_train_state(path)
    load_state_strict(model, state["model"], str(path))
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        try:
            target.load_state_dict(state[name])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
            text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: training state {name} does not fit this run ({text})") from None
    return state
