"""HDF5 layout of a landscape slice, its directions file, and shard merging.

Result file (one per analysis, named ``<kind>-<key>.h5``):

- ``xcoordinates`` ``(nx,)``; ``ycoordinates`` ``(ny,)`` for 2-D slices only;
- one float64 dataset per set and metric (``train_loss``, ``train_srcc``,
  ``train_plcc``, ``test_loss``, ...) shaped ``(ny, nx)`` (2-D) or ``(nx,)`` (1-D):
  ``values[iy, ix]`` is the value at ``(x[ix], y[iy])`` (attribute ``indexing``);
  NaN where not computed yet;
- ``done`` (uint8, same shape): 1 where the cell was computed. Resume uses this
  mask, not NaN, because a computed SRCC can legitimately be NaN (constant outputs);
- optional extra datasets (e.g. the trajectory's projected path);
- attributes: ``key`` (content key of the inputs), ``kind``, ``spec`` (the inputs,
  JSON), ``provenance`` (JSON), ``indexing``, ``metrics``, ``shard`` and the caller's;
  ``nonfinite`` (count) and ``nonfinite_cells`` (flat row-major indices) of the computed
  cells whose loss (any ``*_loss``) is NaN or infinite (:func:`flag_nonfinite`).

Directions are stored once, atomically, in a separate ``directions-<key>.h5``
(groups ``d0``, ``d1``, one dataset per parameter name) so that flushing cells
rewrites only the small result file.

Shards: worker ``rank`` of ``world`` writes ``<kind>-<key>.shard<rank>of<world>.h5``
with the full-size arrays holding only its cells; :func:`merge_shards` combines them
(:func:`merge_rank_shards`: every shard of a world size into the main file).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.store import atomic_path, attrs_from_h5, attrs_to_h5, exclusive, open_h5, update_h5
from landscape.surface.directions import Directions

FORMAT_VERSION = 1
INDEXING_2D = "ij: values[iy, ix] at (x[ix], y[iy]); shape (len(y), len(x))"
INDEXING_1D = "values[ix] at x[ix]; shape (len(x),)"
_RESERVED = ("xcoordinates", "ycoordinates", "done")


@dataclass
class SurfaceResult:
    """A (possibly partial) slice read from its HDF5 file.

    ``values['<set>_<metric>']`` has shape ``(len(y), len(x))`` (2-D) or
    ``(len(x),)`` (1-D), NaN where ``done`` is False. ``computed_now`` and
    ``seconds`` describe the call that returned it (0 when only loaded).
    """

    path: Path
    key: str
    kind: str
    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    done: np.ndarray
    attrs: dict[str, Any]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    computed_now: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def shape(self) -> tuple[int, ...]:
        return self.done.shape

    @property
    def nonfinite(self) -> np.ndarray:
        """Boolean mask (shape of ``done``): computed cells with a NaN or infinite loss."""
        return nonfinite_mask(self.values, self.done)

    @property
    def sets(self) -> list[str]:
        return list(dict.fromkeys(name.split("_", 1)[0] for name in self.values))

    def at(self, x: float, y: float | None = None) -> dict[str, float]:
        """All metrics at the grid point ``(x, y)`` (exact coordinate match)."""
        ix = np.flatnonzero(self.x == x)
        if ix.size == 0:
            raise LandscapeError(f"{self.path}: x = {x} is not on the grid")
        index: tuple[int, ...] = (int(ix[0]),)
        if self.y is not None:
            iy = np.flatnonzero(self.y == (0.0 if y is None else y))
            if iy.size == 0:
                raise LandscapeError(f"{self.path}: y = {y} is not on the grid")
            index = (int(iy[0]), int(ix[0]))
        return {name: float(v[index]) for name, v in self.values.items()}


def nonfinite_mask(values: Mapping[str, np.ndarray], done: np.ndarray) -> np.ndarray:
    """True at computed cells where any ``*_loss`` value is NaN or infinite (SRCC may be NaN legitimately)."""
    mask = np.zeros(done.shape, dtype=bool)
    for name, v in values.items():
        if name.endswith("_loss"):
            mask |= ~np.isfinite(v)
    return mask & done.astype(bool)


def _nonfinite_attrs(values: Mapping[str, np.ndarray], done: np.ndarray) -> dict[str, Any]:
    mask = nonfinite_mask(values, done)
    return {"nonfinite": int(mask.sum()), "nonfinite_cells": [int(c) for c in np.flatnonzero(mask.reshape(-1))]}


def flag_nonfinite(path: Path) -> int:
    """Set the ``nonfinite`` / ``nonfinite_cells`` attributes of ``path``; returns the count (caller holds the lock)."""
    res = load_surface(path)
    attrs = _nonfinite_attrs(res.values, res.done)
    write_cells(path, [], [], attrs=attrs)
    return attrs["nonfinite"]


def nonfinite_warning(result: SurfaceResult, limit: int = 10) -> str | None:
    """One warning line naming the count and the coordinates of the non-finite cells, or None if there are none."""
    mask = result.nonfinite
    n = int(mask.sum())
    if n == 0:
        return None
    if result.y is None:
        where = [f"{result.x[i]:g}" for i in np.flatnonzero(mask)]
        axis = "alpha" if result.kind == "interpolate" else "x"
    else:
        where = [f"({result.x[ix]:g}, {result.y[iy]:g})" for iy, ix in np.argwhere(mask)]
        axis = "(x, y)"
    shown = ", ".join(where[:limit]) + (f", ... ({n - limit} more)" if n > limit else "")
    return (f"warning: {n} of {mask.size} cells have a non-finite loss (NaN or inf) at {axis} = {shown}; "
            f"flagged as 'nonfinite' in {result.path}")


def grid_shape(x: np.ndarray, y: np.ndarray | None) -> tuple[int, ...]:
    return (len(x),) if y is None else (len(y), len(x))


def create_or_check(path: Path, key: str, kind: str, x: np.ndarray, y: np.ndarray | None,
                    metric_names: Sequence[str], attrs: Mapping[str, Any],
                    extra: Mapping[str, np.ndarray] | None = None, must_match: Sequence[str] = ()) -> bool:
    """Create an empty result file (all NaN, nothing done) or check an existing one.

    An existing file must hold the same ``key``, ``kind``, coordinates and the
    attributes named in ``must_match`` (e.g. the directions' digest); otherwise it
    is refused (never reuse stale cells). Returns True if created.
    The caller holds :func:`landscape.store.exclusive` on ``path``.
    """
    path = Path(path)
    if path.exists():
        with open_h5(path) as f:
            stored = attrs_from_h5(f)
            if stored.get("key") != key or stored.get("kind") != kind:
                raise LandscapeError(f"{path}: holds {stored.get('kind')} key {stored.get('key')}, expected "
                                     f"{kind} key {key} (stale or foreign file); refusing to reuse it")
            same = np.array_equal(f["xcoordinates"][()], x) and (
                ("ycoordinates" not in f) if y is None else
                ("ycoordinates" in f and np.array_equal(f["ycoordinates"][()], y)))
            for name in must_match:
                if stored.get(name) != attrs.get(name):
                    raise LandscapeError(f"{path}: attribute '{name}' is {stored.get(name)!r}, expected "
                                         f"{attrs.get(name)!r}; refusing to reuse it")
            missing = [m for m in metric_names if m not in f]
            if not same or missing:
                raise LandscapeError(f"{path}: coordinates or metrics differ from the request "
                                     f"(missing {missing}); refusing to reuse it")
        return False
    shape = grid_shape(x, y)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("xcoordinates", data=np.asarray(x, dtype=np.float64))
            if y is not None:
                f.create_dataset("ycoordinates", data=np.asarray(y, dtype=np.float64))
            for name in metric_names:
                f.create_dataset(name, data=np.full(shape, np.nan))
            f.create_dataset("done", data=np.zeros(shape, dtype=np.uint8))
            for name, arr in (extra or {}).items():
                if name in _RESERVED or name in metric_names:
                    raise LandscapeError(f"extra dataset '{name}' clashes with a result dataset")
                f.create_dataset(name, data=np.asarray(arr))
            attrs_to_h5(f, {**attrs, "key": key, "kind": kind, "format_version": FORMAT_VERSION,
                            "indexing": INDEXING_1D if y is None else INDEXING_2D,
                            "metrics": list(metric_names), "extra": sorted(extra or {})})
    return True


def write_cells(path: Path, cells: Sequence[int], rows: Sequence[Mapping[str, float]],
                attrs: Mapping[str, Any] | None = None) -> None:
    """Atomically store computed cells (flat row-major indices) and mark them done.

    The caller holds the lock; the file is copied, updated and renamed, so a
    killed process leaves either the old or the new file. ``attrs`` are set on the
    file as well (e.g. ``forward``: how the last run evaluated its cells).
    """
    if not cells and not attrs:
        return
    idx = np.asarray(cells, dtype=np.int64)
    with update_h5(path, lock=False) as f:
        if attrs:
            attrs_to_h5(f, attrs)
        for name in (rows[0] if rows else ()):
            arr = f[name][()]
            arr.reshape(-1)[idx] = [row[name] for row in rows]
            f[name][...] = arr
        done = f["done"][()]
        done.reshape(-1)[idx] = 1
        f["done"][...] = done


def load_surface(path: str | Path) -> SurfaceResult:
    """Read a result file (complete or not) into a :class:`SurfaceResult`."""
    path = Path(path)
    with open_h5(path) as f:
        attrs = attrs_from_h5(f)
        if "key" not in attrs or "xcoordinates" not in f or "done" not in f:
            raise LandscapeError(f"{path}: not a landscape slice file (no key, coordinates or done mask)")
        x = f["xcoordinates"][()]
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        values = {m: f[m][()] for m in attrs.get("metrics", [])}
        extra = {m: f[m][()] for m in attrs.get("extra", [])}
        done = f["done"][()]
    _check_layout(path, attrs, x, y, values, done)
    return SurfaceResult(path, attrs["key"], attrs["kind"], x, y, values, done.astype(bool), attrs, extra)


def _check_layout(path: Path, attrs: dict, x: Any, y: Any, values: dict, done: Any) -> None:
    """Types and shapes of a loaded slice file: 1-D numeric coordinates, numeric ``done`` and metric
    arrays of shape ``(len(y), len(x))`` (1-D: ``(len(x),)``); else one line naming the dataset."""
    def numeric(a: Any) -> bool:
        return isinstance(a, np.ndarray) and a.dtype.kind in "biuf"

    for name, a in (("xcoordinates", x), ("ycoordinates", y)):
        if a is not None and (not numeric(a) or a.ndim != 1 or a.size == 0):
            raise LandscapeError(f"{path}: {name} is not a non-empty 1-D numeric array; delete the file to recompute")
    shape = (len(x),) if y is None else (len(y), len(x))
    for name, a in (("done", done), *values.items()):
        if not numeric(a) or a.shape != shape:
            got = f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise LandscapeError(f"{path}: {name} is {got}, need a numeric array of shape {shape} (the grid); "
                                 f"delete the file to recompute")
    if not isinstance(attrs.get("key"), str) or not isinstance(attrs.get("kind"), str):
        raise LandscapeError(f"{path}: attributes key/kind are not strings; delete the file to recompute")


def shard_path(path: Path, rank: int, world: int) -> Path:
    """``<stem>.shard<rank>of<world>.h5`` beside ``path`` (``path`` itself when world == 1)."""
    path = Path(path)
    return path if world == 1 else path.with_name(f"{path.stem}.shard{rank}of{world}{path.suffix}")


def main_path(path: str | Path) -> Path:
    """The merged file of a shard file (inverse of :func:`shard_path`; other paths unchanged)."""
    path = Path(path)
    m = re.fullmatch(r"(.*)\.shard\d+of\d+", path.stem)
    return path.with_name(m.group(1) + path.suffix) if m else path


def done_in(path: str | Path, key: str, kind: str, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """The ``done`` mask of the result file ``path``, which must hold this very slice (key, kind, grid)."""
    res = load_surface(path)
    same = np.array_equal(res.x, x) and (res.y is None if y is None else res.y is not None and np.array_equal(res.y, y))
    if res.key != key or res.kind != kind or not same:
        raise LandscapeError(f"{path}: holds {res.kind} key {res.key}, expected {kind} key {key} on the same grid "
                             f"(stale or foreign file); refusing to reuse it")
    return res.done


def merge_rank_shards(path: str | Path, world: int) -> SurfaceResult:
    """Merge the shard files ``shard_path(path, r, world)`` that exist into ``path`` (see :func:`merge_shards`)."""
    path = Path(path)
    shards = [shard_path(path, r, world) for r in range(world)]
    found = [p for p in shards if p.exists()]
    if not found:
        raise LandscapeError(f"{path}: no shard files of {world} workers found (e.g. {shards[0].name})")
    return merge_shards(found, path)


def merge_shards(paths: Sequence[str | Path], out_path: str | Path) -> SurfaceResult:
    """Combine shard files of one analysis into ``out_path`` (atomically, under its lock).

    All shards must share key, kind and coordinates; a cell done in several shards
    must hold identical values. Cells done nowhere stay NaN (the merged file can be
    resumed like any other).
    """
    if not paths:
        raise LandscapeError("merge_shards: no shard files given")
    shards = [load_surface(p) for p in paths]
    first = shards[0]
    for s in shards[1:]:
        if s.key != first.key or s.kind != first.kind:
            raise LandscapeError(f"{s.path}: key {s.key} differs from {first.path} (key {first.key}); not one analysis")
        if not np.array_equal(s.x, first.x) or (s.y is None) != (first.y is None) or (
                s.y is not None and not np.array_equal(s.y, first.y)):
            raise LandscapeError(f"{s.path}: coordinates differ from {first.path}")
    values = {m: np.full(first.shape, np.nan) for m in first.values}
    done = np.zeros(first.shape, dtype=bool)
    for s in shards:
        both = done & s.done
        for m in values:
            a, b = values[m][both], s.values[m][both]
            if not np.array_equal(a, b, equal_nan=True):
                raise LandscapeError(f"{s.path}: cells shared with another shard hold different '{m}' values")
            values[m][s.done] = s.values[m][s.done]
        done |= s.done
    attrs = {k: v for k, v in first.attrs.items() if k not in ("shard",)}
    attrs["shard"] = None
    attrs.update(_nonfinite_attrs(values, done))
    attrs["merged_from"] = [str(Path(p).name) for p in paths]
    out_path = Path(out_path)
    with exclusive(out_path):
        if out_path.exists():
            existing = load_surface(out_path)
            if existing.key != first.key:
                raise LandscapeError(f"{out_path}: holds key {existing.key}, shards have {first.key}; refusing")
            for m in values:
                take = existing.done & ~done
                values[m][take] = existing.values[m][take]
            done |= existing.done
            attrs.update(_nonfinite_attrs(values, done))
        with atomic_path(out_path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("xcoordinates", data=first.x)
                if first.y is not None:
                    f.create_dataset("ycoordinates", data=first.y)
                for m, arr in values.items():
                    f.create_dataset(m, data=arr)
                f.create_dataset("done", data=done.astype(np.uint8))
                for m, arr in first.extra.items():
                    f.create_dataset(m, data=arr)
                attrs_to_h5(f, attrs)
    return load_surface(out_path)


def save_directions(path: str | Path, directions: Directions, attrs: Mapping[str, Any] | None = None) -> None:
    """Write directions once, atomically: groups ``d0``/``d1`` with one dataset per parameter."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, vec in enumerate(directions.vectors):
                g = f.create_group(f"d{k}")
                for name, t in zip(directions.names, vec):
                    g.create_dataset(name, data=t.detach().cpu().numpy())
            attrs_to_h5(f, {**(attrs or {}), "key": directions.key, "spec": directions.spec,
                            "names": list(directions.names), "count": len(directions.vectors),
                            "cosine": directions.cosine, "digest": directions.digest()})


def load_directions(path: str | Path, like: Sequence[torch.Tensor], key: str | None = None) -> Directions:
    """Read a directions file onto the device/dtype of ``like`` (the parameters), checking key and digest."""
    path = Path(path)
    with open_h5(path) as f:
        attrs = attrs_from_h5(f)
        if key is not None and attrs.get("key") != key:
            raise LandscapeError(f"{path}: holds directions key {attrs.get('key')}, expected {key}; refusing")
        names = tuple(attrs["names"])
        if len(names) != len(like):
            raise LandscapeError(f"{path}: {len(names)} direction tensors for {len(like)} parameters")
        vectors = []
        for k in range(int(attrs["count"])):
            vec = []
            for name, p in zip(names, like):
                arr = f[f"d{k}"][name][()]
                if tuple(arr.shape) != tuple(p.shape):
                    raise LandscapeError(f"{path}: direction '{name}' has shape {arr.shape}, parameter {tuple(p.shape)}")
                vec.append(torch.from_numpy(arr).to(device=p.device, dtype=p.dtype))
            vectors.append(vec)
    cos = attrs.get("cosine")
    out = Directions(names, vectors, attrs["key"], attrs.get("spec", {}), None if cos is None else float(cos))
    if out.digest() != attrs.get("digest"):
        raise LandscapeError(f"{path}: direction contents do not match their stored digest (corrupt file)")
    return out
