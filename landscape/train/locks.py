"""Training locks: one training process per run folder.

Each run a ``train`` command is about to train is locked with the analysis lock
(:func:`landscape.store.exclusive`, a kernel ``flock`` dropped when the process dies, also on
``kill -9``) on ``<out>/.<run>.train.lock``, all of them before the data is loaded: a second
command on the same ``--out`` and run stops at once with ``"<out>: in use by another training
process (pid N)"``. Job-array members (``--only``) training other runs of the sweep never
conflict. The lock files are hidden and are not content of the sweep folder
(:func:`is_lock_name`). Once a run's lock is held, temp files that killed writers left in its
folder are removed (:func:`landscape.store.remove_stale_temps`; the sweep folder's own are
removed by ``exclusive``). Taking a lock writes nothing into the lock file, and a job refused
before its first write removes the lock files (and the folder) it created. ``--force`` may delete the folder with the lock files in it:
:meth:`TrainLocks.renew` takes the locks again on fresh files right after.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable

from landscape.store import exclusive, remove_stale_temps

LOCK_SUFFIX = ".train.lock"


def is_lock_name(name: str) -> bool:
    """Whether ``name`` is a training lock file of a sweep folder (``.<run>.train.lock``)."""
    return name.startswith(".") and name.endswith(LOCK_SUFFIX)


class TrainLocks:
    """The training locks of ``names`` in ``out`` (a context manager; module docstring)."""

    def __init__(self, out: str | Path, names: Iterable[str]):
        self.out = Path(out)
        self.names = list(dict.fromkeys(names))
        self._stack = contextlib.ExitStack()
        self._held: set[str] = set()
        self._created: list[Path] = []       # lock files this object created (removed by discard_created)

    def _lock_file(self, name: str) -> Path:
        return self.out / f".{name}{LOCK_SUFFIX}"

    def renew(self) -> None:
        """Take every lock not held or whose file was removed; clean each run folder's stale temp files."""
        for name in self.names:
            if name in self._held and self._lock_file(name).exists():
                continue
            if not self._lock_file(name).exists():
                self._created.append(self._lock_file(name))
            self._stack.enter_context(exclusive(self.out / f".{name}.train",
                                                busy=f"{self.out}: in use by another training process (pid {{pid}})"))
            self._held.add(name)
            remove_stale_temps(self.out / name)

    def discard_created(self, folder_created: bool) -> None:
        """Remove the lock files this object created (still held), and ``out`` when it created that
        folder too and it is empty now: a job refused before its first write changes nothing."""
        for path in self._created:
            with contextlib.suppress(OSError):
                path.unlink()
        self._created.clear()
        if folder_created:
            with contextlib.suppress(OSError):
                self.out.rmdir()

    def close(self) -> None:
        self._stack.close()
        self._held.clear()

    def __enter__(self) -> TrainLocks:
        try:
            self.renew()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
