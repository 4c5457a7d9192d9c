"""Real OS errors on real file systems: read-only folders, a full disk, an output that is a file.

Each case runs the CLI in a real process against a real file system state and asserts one
``error:`` line naming the path and the OS problem, exit code 2, no traceback, no temp file
left behind and no input changed:

- read-only: as a normal user the folder is ``chmod a-w``; as root (where permissions do not
  stop writes) it is a read-only bind mount of itself (``mount --bind`` + ``remount,ro``);
- full disk: a small ``tmpfs`` filled to the last block (root only: mounting needs
  CAP_SYS_ADMIN; ``test_malformed`` simulates ENOSPC everywhere else).

Cases that the machine cannot set up are skipped with the reason.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from faultkit import COMMANDS, RUN, copy_run, one_line_error, train_args

from landscape.provenance import sha256_file

HESSIAN, SURFACE = COMMANDS["hessian"], COMMANDS["surface"]


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` (and what is below it) unwritable for the CLI process; yields the OS message."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield "Permission denied"
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,bind,ro", str(folder))):
        _umount(folder)
        pytest.skip("running as root and a read-only bind mount is not permitted here")
    try:
        yield "Read-only file system"
    finally:
        _umount(folder)


@contextlib.contextmanager
def full_disk(folder: Path, keep: list[Path], sub: str = "", free_kib: int = 0):
    """A tmpfs at ``folder`` holding copies of the files ``keep`` (in ``folder/sub``) and a filler
    that leaves ``free_kib`` KiB free (0: full to the last block)."""
    folder.mkdir(parents=True, exist_ok=True)
    size_kib = sum(p.stat().st_size for p in keep) // 1024 + 64 * len(keep) + free_kib + 256
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)):
        pytest.skip("a tmpfs of a set size cannot be mounted here (needs root with CAP_SYS_ADMIN)")
    try:
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for src in keep:
            shutil.copy2(src, folder / sub / src.name)
        with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        if free_kib:
            with open(folder / "filler", "r+b") as f:
                f.truncate(max(0, (folder / "filler").stat().st_size - free_kib * 1024))
        yield "No space left on device"
    finally:
        _umount(folder)


def _sha(folder: Path) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temp files of the failed write were left behind: {left}"


@pytest.fixture(scope="module")
def ro_root(tmp_path_factory, training):
    root = tmp_path_factory.mktemp("os_errors")
    copy_run(training.ref_run, root / "run_h" / RUN)
    copy_run(training.ref_run, root / "run_s" / RUN)
    (root / "ro_out").mkdir()
    return root


@pytest.mark.parametrize("command", ["hessian", "surface"])
def test_analysis_in_a_read_only_run_folder_is_one_line(ro_root, server, command):
    run = ro_root / f"run_{command[0]}" / RUN
    before = _sha(run)
    with read_only(run) as problem:
        res = server.run(*map(str, [*COMMANDS[command], run]), name=f"ro-{command}")
    line = one_line_error(res, problem)
    assert str(run) in line, line
    assert _sha(run) == before
    _no_temp_files(run)


def test_report_and_train_into_a_read_only_folder_are_one_line(ro_root, server, training, dataset):
    out = ro_root / "ro_out"
    with read_only(out) as problem:
        rep = server.run("report", str(training.ref), "--out", str(out / "report"), name="ro-report")
        tr = server.run(*map(str, train_args(dataset, out / "sweep")), name="ro-train")
    for res in (rep, tr):
        line = one_line_error(res, problem)
        assert str(out) in line, line
    assert list(out.iterdir()) == []


def test_train_out_naming_an_existing_file_is_one_line(tmp_path, server, dataset):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    res = server.run(*map(str, train_args(dataset, target)), name="out-file")
    line = one_line_error(res, str(target))
    assert "not a folder" in line or "Not a directory" in line or "exists" in line, line
    assert target.read_text() == "keep me\n"


def test_full_disk_while_writing_analysis_h5_is_one_line(tmp_path, server, training):
    disk = tmp_path / "disk"
    keep = [training.ref_run / n for n in ("best.pt", "config.json", "dataset.json", "final.json")]
    with full_disk(disk, keep, RUN) as problem:
        run = disk / RUN
        before = _sha(run)
        res = server.run(*map(str, [*HESSIAN, run]), name="full-hessian")
        line = one_line_error(res, problem)
        assert str(run) in line, line
        assert _sha(run) == before
        _no_temp_files(disk)


def test_full_disk_while_training_is_one_line(tmp_path, server, dataset):
    disk = tmp_path / "disk"
    # room for the configs and a little more, not for a checkpoint (a micro checkpoint is ~0.6 MB)
    with full_disk(disk, [], free_kib=200) as problem:
        res = server.run(*map(str, train_args(dataset, disk / "sweep")), name="full-train")
        line = one_line_error(res, problem)
        assert str(disk / "sweep") in line, line
        _no_temp_files(disk)
        for pt in (disk / "sweep").rglob("*.pt"):
            import torch

            torch.load(pt, weights_only=True)      # any checkpoint left is complete
