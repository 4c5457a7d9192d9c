"""Atomic, locked writes for checkpoints, JSON and HDF5 result files.

- ``atomic_path(path)``: yields a temp path beside ``path``; on success it is
  fsynced and renamed over ``path`` (``os.replace``), on error removed. A killed
  process never leaves a half-written ``path``.
- ``exclusive(path)``: non-blocking ``flock`` on ``path + ".lock"``; a second
  process gets :class:`InUseError` instead of corrupting the file. With
  ``reentrant=True`` (as ``update_h5`` does) a thread that already holds the lock nests
  instead of failing, so a job can hold the lock for its whole run while the writes
  inside it take it again. The kernel drops the lock when its process dies (also
  on ``kill -9``): a leftover ``.lock`` file never blocks a later run. ``busy="... (pid {pid})"``
  names the holder in the refusal (found in ``/proc/locks`` by the lock file's inode; the lock
  file itself is never written, so taking a lock changes no file's content).
- ``remove_stale_temps(folder)``: temp files of this module's naming (``.<name>.<pid>@<host>.tmp``)
  whose writer is dead are removed: at once when written on this host by a pid that no longer
  exists (``os.kill(pid, 0)``), after :data:`STALE_AFTER_S` seconds untouched when written on
  another host sharing the folder; ``exclusive`` does it for the lock's folder
  once it holds the lock, so the next run of a killed job cleans up after it.
- ``update_h5(path)``: lock, copy the current file (if any) to a temp file, yield
  it open for writing, then rename: readers see the old or the new file, never a mix.
- Attributes: nested dicts are stored as JSON strings (``attrs_to_h5``/``attrs_from_h5``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname() or "host")[:64]


def temp_path(path: str | Path, pid: int | None = None, host: str | None = None) -> Path:
    """The temp file :func:`atomic_path` writes for ``path``: ``.<name>.<pid>@<host>.tmp`` beside it
    (the writer's pid and host, so a later run can tell a dead writer's file from a live one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}@{_host() if host is None else host}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Temp path beside ``path``; renamed over it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        try:
            yield tmp
        except OSError as e:                   # name the file being written, not its temp file
            if e.filename is not None and str(e.filename) == str(tmp):
                e.filename = str(path)
            raise
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):     # a failed write (disk full, ...) leaves no temp file
            tmp.unlink()


def check_replaceable(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse to replace ``out`` when it is a symlink, or is, contains or lies inside one of ``inputs``.

    The one check before any ``--force`` deletes a folder: an output never takes an input with it
    (the sweep being reported, the dataset, a checkpoint being read). Returns ``out`` resolved.
    """
    out = Path(out)
    if out.is_symlink():
        raise LandscapeError(f"{out}: is a symbolic link; --force does not replace links (give the real folder)")
    real = out.resolve()
    for item in inputs:
        if item is None or str(item) == "":
            continue
        inp = Path(item).resolve()
        if real == inp or real in inp.parents or inp in real.parents:
            rel = "is" if real == inp else ("contains" if real in inp.parents else "lies inside")
            raise LandscapeError(f"{out}: {rel} the input {inp}; --force never deletes an input: use another --out")
    return real


def safe_rmtree(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """``shutil.rmtree(out)`` after :func:`check_replaceable` (the only folder deletion of the package)."""
    shutil.rmtree(check_replaceable(out, inputs))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def _type_name(types: type | tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def check_json_types(path: str | Path, obj: Any, require: Mapping[str, type | tuple[type, ...]],
                     what: str = "") -> Any:
    """``obj`` is an object holding every key of ``require`` with a value of its type(s), else a
    one-line :class:`LandscapeError` naming the file and the key (``int`` accepts no bool,
    ``float`` accepts ints)."""
    where = f"{path}: {what + ' ' if what else ''}"
    if not isinstance(obj, dict):
        raise LandscapeError(f"{where}is {_type_name(type(obj))}, need an object with {', '.join(require)}")
    for key, types in require.items():
        if key not in obj:
            raise LandscapeError(f"{where}lacks the key '{key}'")
        value, allowed = obj[key], types if isinstance(types, tuple) else (types,)
        if float in allowed:
            allowed = (*allowed, int)
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise LandscapeError(f"{where}'{key}' is {shown}, need {_type_name(types)}")
    return obj


def read_json(path: str | Path, require: Mapping[str, type | tuple[type, ...]] | None = None) -> Any:
    """Read JSON, with a one-line error naming the file when it is unreadable (missing, not
    UTF-8, not JSON) or, with ``require``, lacks a key or holds a value of the wrong type
    (:func:`check_json_types`)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise LandscapeError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, ValueError) as e:
        raise LandscapeError(f"{path}: not valid JSON ({e})") from None
    return obj if require is None else check_json_types(path, obj, require)


def read_jsonl(path: str | Path) -> list[Any]:
    """Lines of a JSON-lines file (blank lines skipped); a broken line is a one-line error naming its number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LandscapeError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise LandscapeError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise LandscapeError(f"{path}: line {n} is not valid JSON ({e})") from None
    return out


STALE_AFTER_S = 30.0       # another host's temp file untouched this long is removed
_TEMP_NAME = re.compile(r"^\..+\.(\d+)(?:@([A-Za-z0-9-]+))?\.tmp$")   # ".<name>.<pid>@<host>.tmp"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (``EPERM``: it exists, owned by someone else)."""
    if pid <= 0:
        return True                     # never a writer of ours: leave its file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(folder: str | Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temp files of :func:`atomic_path` in ``folder`` (not recursive) whose writer is
    gone: written on this host by a pid that no longer exists (removed at once), or written on
    another host (or by an older version, without a host) and not modified for ``older_than_s``
    seconds (a live writer elsewhere keeps touching its file; its pid means nothing here).
    Returns the removed paths; files that vanish meanwhile or cannot be removed are skipped."""
    removed, now, here = [], time.time(), _host()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = _TEMP_NAME.match(entry.name)
        if not found:
            continue
        pid, host = int(found.group(1)), found.group(2)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if host == here:
                if _pid_alive(pid):
                    continue
            elif (host is None and _pid_alive(pid)) or now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _lock_holder(fd: int) -> str:
    """The pid holding a ``flock`` on the file of ``fd`` (from ``/proc/locks``, matched by inode),
    ``"?"`` when it cannot be told (no ``/proc``, the holder just left)."""
    try:
        inode = os.fstat(fd).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "?"
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            return parts[4]
    return "?"


_held = threading.local()   # lock files held by this thread: realpath -> depth


def _held_locks() -> dict[str, int]:
    """This thread's held locks (reset in a forked child, which does not own the parent's locks)."""
    if getattr(_held, "pid", None) != os.getpid():
        _held.pid, _held.locks = os.getpid(), {}
    return _held.locks


@contextlib.contextmanager
def exclusive(path: str | Path, reentrant: bool = False, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive non-blocking lock for ``path``; :class:`InUseError` if it is taken
    (by another process, another thread, or -- unless ``reentrant`` -- this thread).

    ``busy``: the refusal's text, with ``{pid}`` replaced by the holder's pid (``?`` when unknown);
    default ``"<path>: in use by another process (lock <path>.lock)"``. Once held, stale temp
    files in the lock's folder are removed (:func:`remove_stale_temps`)."""
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
            if busy is not None:
                raise InUseError(busy.format(pid=_lock_holder(fd))) from None
            raise InUseError(f"{path}: in use by another process (lock {lock})") from None
        remove_stale_temps(lock.parent)
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
        try:
            with h5py.File(tmp, "a") as f:
                yield f
        except OSError as e:
            raise h5_os_error(e, path) from None


def h5_os_error(e: OSError, path: Path) -> OSError:
    """The HDF5 library's multi-line write error (``... errno = 28, error message = 'No space left
    on device' ...`` about the temp file) as a plain ``OSError`` naming ``path``."""
    found = re.search(r"errno = (\d+)", str(e))
    code = int(found.group(1)) if found else (e.errno or errno.EIO)
    return OSError(code, os.strerror(code), str(path))


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


def _h5_value_ok(value: Any, hint: Any) -> bool:
    import numbers
    import types
    import typing

    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in options:
        if t is type(None) and value is None:
            return True
        if t is np.ndarray and isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size > 0:
            return True
        if t is float and isinstance(value, (numbers.Real, np.number)) and not isinstance(value, (bool, np.bool_)):
            return True
        if t is int and isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return True
        if t is bool and isinstance(value, (bool, np.bool_)):
            return True
        if t is str and isinstance(value, str):
            return True
        if t not in (np.ndarray, float, int, bool, str, type(None)):
            return True                     # other field types: not checked here
    return False


def check_h5_fields(path: str | Path, group: str, cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` read from HDF5 ``group`` fit the field types of dataclass ``cls`` (arrays: non-empty,
    numeric; numbers: not strings or bytes; required fields present), else a one-line
    :class:`LandscapeError` naming the file, the dataset or attribute, and how to recover."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for fl in dataclasses.fields(cls):
        required = fl.default is dataclasses.MISSING and fl.default_factory is dataclasses.MISSING
        if fl.name not in values:
            if required:
                raise LandscapeError(f"{path}: {group} lacks '{fl.name}'; delete the file to recompute")
            continue
        value = values[fl.name]
        if not _h5_value_ok(value, hints[fl.name]):
            shown = (f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray)
                     else f"{type(value).__name__} {value!r:.40}")
            raise LandscapeError(f"{path}: {group}/{fl.name} is {shown}, need "
                                 f"{getattr(hints[fl.name], '__name__', hints[fl.name])}"
                                 f"{' (non-empty, numeric)' if 'ndarray' in str(hints[fl.name]) else ''}; "
                                 f"delete the file to recompute")
    return dict(values)
