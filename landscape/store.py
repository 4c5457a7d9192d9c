"""Atomic, locked writes for checkpoints, JSON and HDF5 result files.

- ``atomic_path(path)``: yields a temp path beside ``path``; on success it is
  fsynced and renamed over ``path`` (``os.replace``), on error removed. A killed
  process never leaves a half-written ``path``.
- ``exclusive(path)``: non-blocking ``flock`` on ``path + ".lock"``; a second
  process gets :class:`InUseError` instead of corrupting the file. With
  ``reentrant=True`` (as ``update_h5`` does) a thread that already holds the lock nests
  instead of failing, so a job can hold the lock for its whole run while the writes
  inside it take it again. The kernel drops the lock when its process dies (also
  on ``kill -9``): a leftover ``.lock`` file never blocks a later run.
- ``update_h5(path)``: lock, copy the current file (if any) to a temp file, yield
  it open for writing, then rename: readers see the old or the new file, never a mix.
- Attributes: nested dicts are stored as JSON strings (``attrs_to_h5``/``attrs_from_h5``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from landscape.errors import InUseError, LandscapeError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Temp path beside ``path``; renamed over it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON, with a one-line error naming the file when it is unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise LandscapeError(f"{path}: not valid JSON ({e})") from None


_held = threading.local()   # lock files held by this thread: realpath -> depth


def _held_locks() -> dict[str, int]:
    """This thread's held locks (reset in a forked child, which does not own the parent's locks)."""
    if getattr(_held, "pid", None) != os.getpid():
        _held.pid, _held.locks = os.getpid(), {}
    return _held.locks


@contextlib.contextmanager
def exclusive(path: str | Path, reentrant: bool = False) -> Iterator[None]:
    """Hold an exclusive non-blocking lock for ``path``; :class:`InUseError` if it is taken
    (by another process, another thread, or -- unless ``reentrant`` -- this thread)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    held = _held_locks()
    key = os.path.realpath(lock)
    if reentrant and key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InUseError(f"{path}: in use by another process (lock {lock})") from None
        held[key] = held.get(key, 0) + 1
        try:
            yield
        finally:
            held[key] -= 1
            if not held[key]:
                del held[key]
    finally:
        os.close(fd)


@contextlib.contextmanager
def update_h5(path: str | Path, lock: bool = True) -> Iterator[h5py.File]:
    """Open a copy of ``path`` for writing; atomically replace ``path`` on success."""
    path = Path(path)
    guard = exclusive(path, reentrant=True) if lock else contextlib.nullcontext()
    with guard, atomic_path(path) as tmp:
        if path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            yield f


def open_h5(path: str | Path) -> h5py.File:
    """Open an HDF5 file read-only with a one-line error when missing or corrupt."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except OSError as e:
        raise LandscapeError(f"{path}: not a readable HDF5 file ({e})") from None


def attrs_to_h5(obj: h5py.Group | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Store scalars and strings as attributes; dicts and lists as JSON strings."""
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) or value is None:
            obj.attrs[key] = json.dumps(value, sort_keys=True, default=str)
        elif isinstance(value, (bool, np.bool_)):
            obj.attrs[key] = bool(value)
        else:
            obj.attrs[key] = value


def attrs_from_h5(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Inverse of :func:`attrs_to_h5` (JSON strings are decoded)."""
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{n":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out
