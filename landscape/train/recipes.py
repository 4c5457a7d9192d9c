"""Training recipes: per model, the :class:`~landscape.train.config.TrainConfig` values that replace
its defaults where neither the config file nor the command line sets the key
(:func:`landscape.train.config.resolve_config`: defaults < recipe < file < command line).

Kept free of heavy imports: the CLI shows these values in ``--help``.
"""
from __future__ import annotations

from typing import Any

# ``micro`` (trained from scratch on the embedded synthetic data): MSE without the ranking term (a
# per-example loss, so its Hessian does not couple the images of a batch), lr 2e-3 at the reference
# batch 32 with 3 warmup epochs and the cosine decay over 15 epochs, 3 crops per image and epoch,
# no early stop. Measured (README, "Training
# recipe"): with TrainConfig's defaults (L1 + alpha 0.5, lr 1e-4) the micro model stays near
# constant prediction (test SRCC about 0.3).
RECIPES: dict[str, dict[str, Any]] = {
    "micro": {"loss": "mse", "ranking_alpha": 0.0, "lr": 2e-3, "epochs": 15, "patience": 0,
              "warmup_epochs": 3, "train_patches": 3},
}


def recipe(model: str) -> dict[str, Any]:
    """The training recipe of ``model`` (:data:`RECIPES`; empty for models without one)."""
    return dict(RECIPES.get(model, {}))


def shown_default(key: str, general: Any) -> str:
    """``--help`` text of a default that a recipe replaces, e.g. ``"1e-4 (micro: 0.002)"``."""
    own = [f"{model}: {r[key]}" for model, r in RECIPES.items() if key in r]
    return f"{general} ({'; '.join(own)})" if own else str(general)
