"""HDF5 layout of the Hessian results in a run's ``analysis.h5``: every setting kept, none overwritten.

The latest result of a part is ``<group>/<part>`` for the whole model and
``<group>/blocks/<block>/<part>`` per block (``group`` default ``hessian``; ``part`` one of
``topk``, ``trace``, ``density``): the layout earlier versions wrote, so their files read
unchanged (each stored part is one setting). A result written under another content key
(another sample count, subset, seed, criterion, estimator setting or checkpoint) moves the
one it displaces to ``<group>/earlier/<part path>/<key>``; a result with the same key
replaces it (same settings, same inputs). Array fields become datasets, the other fields
attributes, plus ``kind`` (the part), ``key`` (content key of the inputs, see
:func:`landscape.provenance.content_key`) and ``provenance`` (JSON).
:func:`hessian_results` lists every stored result of a part, latest first.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from landscape.errors import LandscapeError, check_choice
from landscape.hessian.results import PART_TYPES, HessianDensity, HessianEigen, HessianTrace
from landscape.provenance import content_key
from landscape.store import attrs_from_h5, attrs_to_h5, check_h5_fields, open_h5, update_h5

H5_GROUP = "hessian"
EARLIER = "earlier"          # <group>/earlier/<part path>/<key>: results displaced by a newer key


def part_path(part: str, block: str | None, group: str = H5_GROUP) -> str:
    """HDF5 path of the latest ``part`` (of ``block``, or of the whole model) under ``group``."""
    check_choice("Hessian part", part, PART_TYPES)
    if block and "/" in block:
        raise LandscapeError(f"block name {block!r} must not contain '/'")
    return f"{group}/blocks/{block}/{part}" if block else f"{group}/{part}"


def earlier_path(part: str, block: str | None, group: str = H5_GROUP) -> str:
    """HDF5 folder of the results of ``part`` displaced by a newer key (one subgroup per key)."""
    return f"{group}/{EARLIER}/{part_path(part, block, group)[len(group) + 1:]}"


def part_of(result: Any) -> str:
    """The part name of a result object (``topk``, ``trace`` or ``density``)."""
    for part, cls in PART_TYPES.items():
        if isinstance(result, cls):
            return part
    raise LandscapeError(f"cannot store a {type(result).__name__} as a Hessian result")


def _key_of(g) -> str:
    return str(attrs_from_h5(g).get("key", ""))


def save_hessian_result(h5_path: str | Path, result: HessianEigen | HessianTrace | HessianDensity,
                        provenance: Mapping[str, Any] | None = None, *, key: str = "",
                        group: str = H5_GROUP) -> str:
    """Write ``result`` to ``<group>/<part>`` (or ``<group>/blocks/<block>/<part>``) atomically.

    Arrays become datasets, the other fields attributes, plus ``key`` (content key of the
    inputs), ``kind`` and ``provenance`` (JSON). An earlier result there with the same key is
    replaced; one with another key moves to ``<group>/earlier/.../<its key>`` (kept, see the
    module docstring). ``key=""``: the key is :func:`~landscape.provenance.content_key` of the
    part and the provenance without its timestamp and versions. Returns the HDF5 path.
    """
    part = part_of(result)
    block = result.block or None
    path = part_path(part, block, group)
    prov = dict(provenance or {})
    if not key:
        key = content_key({"part": part, "block": block or "",
                           "provenance": {k: v for k, v in prov.items() if k not in ("created_utc", "versions")}})
    earlier = earlier_path(part, block, group)
    with update_h5(h5_path) as f:
        if f"{earlier}/{key}" in f:
            del f[f"{earlier}/{key}"]
        if path in f:
            old = _key_of(f[path])
            if old and old != key:
                f.require_group(earlier)
                f.move(path, f"{earlier}/{old}")
            else:
                del f[path]
        g = f.create_group(path)
        attrs: dict[str, Any] = {"kind": part, "key": key, "provenance": prov}
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


def _read(h5_path: str | Path, g, part: str) -> tuple[Any, str, dict]:
    attrs = attrs_from_h5(g)
    cls = PART_TYPES[part]
    kwargs = {}
    for fl in dataclasses.fields(cls):
        if fl.name in g and not isinstance(g[fl.name], type(g)):
            kwargs[fl.name] = g[fl.name][()]
        elif fl.name in attrs:
            kwargs[fl.name] = attrs[fl.name]
    check_h5_fields(h5_path, g.name.lstrip("/"), cls, kwargs)
    prov = attrs.get("provenance") or {}
    return cls(**kwargs), str(attrs.get("key", "")), prov if isinstance(prov, dict) else {}


def _groups(f, part: str, block: str | None, group: str) -> list:
    """The latest group of ``part`` then the earlier ones (absent ones skipped)."""
    path, earlier = part_path(part, block, group), earlier_path(part, block, group)
    out = [f[path]] if path in f else []
    if earlier in f:
        out += [f[earlier][k] for k in sorted(f[earlier])]
    return out


def load_hessian_result(h5_path: str | Path, part: str, *, block: str | None = None,
                        group: str = H5_GROUP, key: str | None = None) -> tuple[Any, str, dict] | None:
    """``(result, key, provenance)`` of the latest ``part`` (and ``block``), or of the one stored under
    ``key`` (latest or earlier); None if absent."""
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if key is None:
            path = part_path(part, block, group)
            return _read(h5_path, f[path], part) if path in f else None
        for g in _groups(f, part, block, group):
            if _key_of(g) == key:
                return _read(h5_path, g, part)
    return None


def hessian_results(h5_path: str | Path, part: str, *, block: str | None = None,
                    group: str = H5_GROUP) -> list[tuple[Any, str, dict]]:
    """Every stored ``(result, key, provenance)`` of ``part`` (and ``block``): the latest first, then
    the earlier ones (other settings or checkpoints); ``[]`` when none or no file."""
    if not Path(h5_path).exists():
        return []
    with open_h5(h5_path) as f:
        return [_read(h5_path, g, part) for g in _groups(f, part, block, group)]


def stored_key(h5_path: str | Path, part: str, *, block: str | None = None, group: str = H5_GROUP) -> str | None:
    """Content key of the latest stored part, or None."""
    path = part_path(part, block, group)
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if path not in f:
            return None
        return str(f[path].attrs.get("key", ""))


def stored_keys(h5_path: str | Path, part: str, *, block: str | None = None, group: str = H5_GROUP) -> list[str]:
    """Content keys of every stored result of ``part`` (latest first), ``[]`` when none."""
    if not Path(h5_path).exists():
        return []
    with open_h5(h5_path) as f:
        return [_key_of(g) for g in _groups(f, part, block, group)]
