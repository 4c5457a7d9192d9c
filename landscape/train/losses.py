"""IQA training loss: regression term + alpha * pairwise ranking hinge.

``L = mean_i rho(p_i - y_i) + alpha * mean_{(i,j) valid} relu(margin - sign(y_i - y_j) (p_i - p_j))``
over unordered pairs i < j, with ``rho(e) = |e|`` (``regression="l1"``, HyperIQA's loss,
the default) or ``rho(e) = e^2`` (``"mse"``; the micro recipe, which learns faster from
scratch: README, "Training recipe"). Pairs with equal labels (e.g. crops of one image) are
masked; the hinge is normalised by the number of valid pairs (0 when there are none,
e.g. batch size 1). Scores are on the normalised [0, 1] scale. The ranking term
depends on batch composition, so alpha and margin are recorded with every run.

:func:`make_criterion` builds the criterion an analysis uses by name (:data:`LOSSES`).
"""
from __future__ import annotations

import torch
from torch import nn

from landscape.errors import check_choice

LOSSES = ("train", "l1", "mse")
REGRESSION_LOSSES = ("l1", "mse")       # the regression term of the training loss


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean hinge over pairs with different labels; 0-d zero if no valid pair."""
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    dp = pred[:, None] - pred[None, :]
    sign = torch.sign(target[:, None] - target[None, :])
    upper = torch.triu(torch.ones_like(dp, dtype=torch.bool), diagonal=1)
    valid = upper & (sign != 0)
    hinge = torch.relu(margin - sign * dp) * valid
    return hinge.sum() / valid.sum().clamp(min=1)


class IQALoss(nn.Module):
    """``criterion(outputs, targets)`` for IQA regression (see module docstring)."""

    def __init__(self, ranking_alpha: float = 0.5, ranking_margin: float = 0.0, regression: str = "l1"):
        super().__init__()
        check_choice("regression loss", regression, REGRESSION_LOSSES)
        self.ranking_alpha = float(ranking_alpha)
        self.ranking_margin = float(ranking_margin)
        self.regression = regression

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
        err = pred - target
        loss = torch.mean(err * err) if self.regression == "mse" else torch.mean(torch.abs(err))
        if self.ranking_alpha:
            loss = loss + self.ranking_alpha * ranking_loss(pred, target, self.ranking_margin)
        return loss

    def describe(self) -> dict:
        """Settings record; the L1 one is unchanged from earlier versions (so stored keys still match)."""
        if self.regression == "l1":
            return {"name": "l1+ranking", "ranking_alpha": self.ranking_alpha, "ranking_margin": self.ranking_margin}
        name = self.regression + ("+ranking" if self.ranking_alpha else "")
        return {"name": name, "regression": self.regression,
                "ranking_alpha": self.ranking_alpha, "ranking_margin": self.ranking_margin}


def make_criterion(name: str = "train", *, ranking_alpha: float = 0.5, ranking_margin: float = 0.0,
                   regression: str = "l1") -> nn.Module:
    """Criterion ``name`` of :data:`LOSSES`: ``train`` (the run's ``regression`` term + ranking with
    its ``ranking_alpha`` and ``ranking_margin``, as trained), ``l1`` (:class:`IQALoss` with alpha 0) or ``mse``
    (``torch.nn.MSELoss``, mean over samples)."""
    check_choice("loss", name, LOSSES)
    if name == "train":
        return IQALoss(ranking_alpha, ranking_margin, regression)
    if name == "l1":
        return IQALoss(0.0, 0.0)
    return nn.MSELoss()
