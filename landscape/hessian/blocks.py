"""Named blocks of parameters and the diagonal-block operators ``H[block, block]``.

A block is a list of trainable parameter names; its operator is the Hessian restricted to
those coordinates (``P^T H P`` with ``P`` selecting them), sharing the full operator's data
and kept graphs (:meth:`landscape.hessian.HessianOperator.restrict`).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from torch import nn

from landscape.errors import LandscapeError
from landscape.hessian.operator import CurvatureOperator
from landscape.params import trainable_parameters

Groups = str | Mapping[str, Sequence[str]]


def parameter_groups(model: nn.Module, groups: Groups) -> dict[str, list[str]]:
    """Named blocks of trainable parameter names.

    ``"stages"``: one block per timm Swin stage, ``layers.0``, ``layers.1``, ... (names
    starting with ``layers.<i>.``). A mapping ``block -> entries``: each entry is a parameter
    name or a module prefix (matching ``entry.*``).
    """
    names = [n for n, _ in trainable_parameters(model)]
    if isinstance(groups, str):
        if groups != "stages":
            raise LandscapeError(f"blocks={groups!r}: use 'stages' or a mapping name -> parameter names")
        out: dict[str, list[str]] = {}
        for n in names:
            m = re.match(r"^(layers\.\d+)\.", n)
            if m:
                out.setdefault(m.group(1), []).append(n)
        if not out:
            raise LandscapeError("blocks='stages': the model has no timm Swin stages (parameters 'layers.<i>.*')")
        return dict(sorted(out.items(), key=lambda kv: int(kv[0].split(".")[1])))
    out = {}
    for block, entries in groups.items():
        if isinstance(entries, str):
            entries = [entries]
        picked: list[str] = []
        for e in entries:
            hit = [n for n in names if n == e or n.startswith(e + ".")]
            if not hit:
                raise LandscapeError(f"block {block!r}: '{e}' matches no trainable parameter")
            picked += [n for n in hit if n not in picked]
        if not picked:
            raise LandscapeError(f"block {block!r} is empty")
        out[str(block)] = picked
    return out


def block_operators(op: CurvatureOperator, groups: Groups) -> dict[str, CurvatureOperator]:
    """Diagonal-block operators ``{name: H[block, block]}`` sharing ``op``'s data and graphs."""
    return {name: op.restrict(names, block=name)
            for name, names in parameter_groups(op.model, groups).items()}
