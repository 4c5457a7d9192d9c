"""HDF5 layout of the Hessian results in a run's ``analysis.h5``.

One group per part: ``<group>/<part>`` for the whole model and
``<group>/blocks/<block>/<part>`` per block (``group`` default ``hessian``; ``part`` one of
``topk``, ``trace``, ``density``). Array fields become datasets, the other fields
attributes, plus ``kind`` (the part), ``key`` (content key of the inputs, see
:func:`landscape.provenance.content_key`) and ``provenance`` (JSON).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from landscape.errors import LandscapeError, check_choice
from landscape.hessian.results import PART_TYPES, HessianDensity, HessianEigen, HessianTrace
from landscape.store import attrs_from_h5, attrs_to_h5, check_h5_fields, open_h5, update_h5

H5_GROUP = "hessian"


def part_path(part: str, block: str | None, group: str = H5_GROUP) -> str:
    """HDF5 path of ``part`` (of ``block``, or of the whole model) under ``group``."""
    check_choice("Hessian part", part, PART_TYPES)
    if block and "/" in block:
        raise LandscapeError(f"block name {block!r} must not contain '/'")
    return f"{group}/blocks/{block}/{part}" if block else f"{group}/{part}"


def part_of(result: Any) -> str:
    """The part name of a result object (``topk``, ``trace`` or ``density``)."""
    for part, cls in PART_TYPES.items():
        if isinstance(result, cls):
            return part
    raise LandscapeError(f"cannot store a {type(result).__name__} as a Hessian result")


def save_hessian_result(h5_path: str | Path, result: HessianEigen | HessianTrace | HessianDensity,
                        provenance: Mapping[str, Any] | None = None, *, key: str = "",
                        group: str = H5_GROUP) -> str:
    """Write ``result`` to ``<group>/<part>`` (or ``<group>/blocks/<block>/<part>``) atomically.

    Arrays become datasets, the other fields attributes, plus ``key`` (content key of the
    inputs), ``kind`` and ``provenance`` (JSON). Replaces an earlier result of the same part.
    Returns the HDF5 path of the group.
    """
    part = part_of(result)
    path = part_path(part, result.block or None, group)
    with update_h5(h5_path) as f:
        if path in f:
            del f[path]
        g = f.create_group(path)
        attrs: dict[str, Any] = {"kind": part, "key": key, "provenance": dict(provenance or {})}
        for fl in dataclasses.fields(result):
            value = getattr(result, fl.name)
            if isinstance(value, np.ndarray):
                g.create_dataset(fl.name, data=value)
            elif value is None:
                continue
            else:
                attrs[fl.name] = value
        attrs_to_h5(g, attrs)
    return path


def load_hessian_result(h5_path: str | Path, part: str, *, block: str | None = None,
                        group: str = H5_GROUP) -> tuple[Any, str, dict] | None:
    """``(result, key, provenance)`` stored for ``part`` (and ``block``), or None if absent."""
    path = part_path(part, block, group)
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if path not in f:
            return None
        g = f[path]
        attrs = attrs_from_h5(g)
        cls = PART_TYPES[part]
        kwargs = {}
        for fl in dataclasses.fields(cls):
            if fl.name in g:
                kwargs[fl.name] = g[fl.name][()]
            elif fl.name in attrs:
                kwargs[fl.name] = attrs[fl.name]
        check_h5_fields(h5_path, path, cls, kwargs)
        return cls(**kwargs), str(attrs.get("key", "")), attrs.get("provenance") or {}


def stored_key(h5_path: str | Path, part: str, *, block: str | None = None, group: str = H5_GROUP) -> str | None:
    """Content key of a stored part, or None."""
    path = part_path(part, block, group)
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if path not in f:
            return None
        return str(f[path].attrs.get("key", ""))
