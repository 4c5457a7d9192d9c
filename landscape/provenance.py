"""Provenance: content hashes and library versions attached to every stored number.

- :func:`hash_state`: SHA-256 of a state dict (sorted keys, dtypes, shapes, raw bytes).
- :func:`hash_batches`: the one content hash of a list of ``(inputs, targets)`` batches; every
  analyzer (Hessian, sharpness, surface, data-parallel or not) keys its data by it.
- :func:`hash_lines`: SHA-256 of text lines (a dataset split's sorted ``path<TAB>score`` lines).
- :func:`content_key`: short key of a result's inputs, carrying the key spec version
  :data:`KEY_SPEC` so results stored under an older key layout never match (recomputed,
  never mixed).
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

_PACKAGES = ("landscape", "torch", "timm", "numpy", "scipy", "h5py", "matplotlib")

#: Version of the content-key layout; bump when what a key hashes changes meaning.
#: 2: ``key_spec`` field added; one batch hash (:func:`hash_batches`) for every analyzer.
KEY_SPEC = 2


def versions() -> dict[str, str]:
    """Python and key package versions (``"absent"`` when not installed); a fresh dict each call."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    # read once per process: the package metadata lookups cost ~20 ms, paid by every result file
    out = [("python", platform.python_version())]
    for name in _PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "absent"))
    return tuple(out)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_state(state: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over sorted keys, dtypes, shapes and raw bytes of a state dict.

    Per key: ``"key|dtype|shape|"`` then the tensor's bytes (C order, on the CPU). 0-d tensors
    (e.g. BatchNorm's ``num_batches_tracked``) are hashed with their shape ``()`` and their
    one element's bytes.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1) first: a 0-d tensor becomes 1-element, which can be byte-viewed
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hash_batches(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Hex SHA-256 of every batch's inputs and targets (order, shapes, dtypes and bytes).

    :func:`hash_state` of ``{"000000.x": x_0, "000000.y": y_0, "000001.x": ...}``: the one
    batch hash of the project (a data-parallel analysis hashes the global list).
    """
    return hash_state({f"{i:06d}.{part}": t for i, (x, y) in enumerate(batches) for part, t in (("x", x), ("y", y))})


def hash_lines(lines: Iterable[str]) -> str:
    """Hex SHA-256 of text lines joined by ``"\\n"`` (UTF-8; order matters, no trailing newline)."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def hash_indices(indices: Iterable[int]) -> str:
    """Hex SHA-256 of a sequence of integer indices (order matters)."""
    arr = np.asarray(list(indices), dtype=np.int64)
    return hashlib.sha256(arr.tobytes()).hexdigest()


def content_key(spec: Mapping[str, Any], length: int = 16) -> str:
    """Short stable key of a JSON-serialisable spec (sorted keys): keys results by their inputs.

    The first ``length`` hex digits of SHA-256 of the JSON of ``{**spec, "key_spec": KEY_SPEC}``.
    """
    text = json.dumps({**spec, "key_spec": KEY_SPEC}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def provenance(**extra: Any) -> dict[str, Any]:
    """Timestamp, versions and the caller's fields (checkpoint hash, subset, seed, ...)."""
    return {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        **extra,
    }
