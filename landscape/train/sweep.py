"""Sweeps: batch sizes x LR rules x seeds (x split seeds), one run folder each, plus ``sweep.json``.

``sweep.json`` is a static manifest (the sweep config and the ordered run list);
run status lives in each run's ``final.json``, so job-array members (``--only``)
never race on a shared file (members starting together all write the same manifest,
atomically; one's temp manifest does not make the folder "non-empty" for another). An output folder that holds another sweep, or any
other content, is refused unless ``force`` is given (which clears it first).

Everything that can be checked before training is checked before the first run
starts: config, dataset, batch size against the patches of one epoch, divisibility
by accumulation x world size, the output folder and each run folder's config. A run
that diverges (NaN/inf loss) or runs out of GPU memory is reported and the sweep goes
on; a diverged run has a ``final.json`` (re-running it would diverge again), an
out-of-memory run has none (it is retried by the next call).
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from landscape import distributed as dist
from landscape.data.check import check_split_overlap
from landscape.errors import LandscapeError
from landscape.provenance import provenance
from landscape.store import read_json, safe_rmtree, write_json
from landscape.train.config import TrainConfig, config_differences
from landscape.train.locks import TrainLocks, is_lock_name
from landscape.train.pretrained import pretrained_match
from landscape.train.trainer import RunResult, RunSpec, check_batch_fits, check_run_dir, run_config, train_run

MANIFEST = "sweep.json"
KIND = "landscape-sweep"


def expand_sweep(cfg: TrainConfig) -> list[RunSpec]:
    """Runs in a fixed order: batch size, then LR rule, then seed, then split seed (named
    ``..._split{k}`` only when the sweep has more than one split seed)."""
    many = len(cfg.split_seeds) > 1
    return [RunSpec(b, s, r, cfg.accumulate, k, many) for b in cfg.batch_sizes for r in cfg.lr_scaling
            for s in cfg.seeds for k in cfg.split_seeds]


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for key in ("device", "workers"):
        d.pop(key)
    return d


def _inputs(cfg: TrainConfig) -> list[str | None]:
    """What a sweep reads: the dataset root and a pretrained-weights file (never deleted by --force)."""
    root = cfg.dataset.split(":", 1)[1] if ":" in cfg.dataset else None
    pre = cfg.pretrained if cfg.pretrained and cfg.pretrained != "hub" else None
    return [root, pre]


def prepare_output(cfg: TrainConfig, out: Path, force: bool = False) -> None:
    """Create ``out`` with its manifest, or check that it holds this very sweep."""
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        old = read_json(manifest)
        if old.get("kind") != KIND:
            raise LandscapeError(f"{manifest}: not a landscape sweep manifest")
        changed = config_differences(old.get("config") or {}, _identity(cfg))
        if changed:
            if not force:
                raise LandscapeError(f"{out}: holds a different sweep (differs in: {', '.join(changed)}); "
                                     f"use another --out or --force to replace it")
            if dist.is_main():
                safe_rmtree(out, _inputs(cfg))
    elif out.exists() and any(not p.name.startswith(f".{MANIFEST}.") and not is_lock_name(p.name)
                              for p in out.iterdir()):
        # (a job-array member may be writing the manifest right now: its temp file is not "content")
        if not force:
            raise LandscapeError(f"{out}: folder is not empty and holds no sweep; use another --out or --force")
        if dist.is_main():
            safe_rmtree(out, _inputs(cfg))
    dist.barrier()
    if dist.is_main() and not manifest.exists():
        runs = [{"index": i, "name": s.name, "batch_size": s.batch_size, "seed": s.seed,
                 "lr_rule": s.lr_rule, "accumulate": s.accumulate, "split_seed": s.split_seed}
                for i, s in enumerate(expand_sweep(cfg))]
        write_json(manifest, {"kind": KIND, "config": _identity(cfg), "runs": runs,
                              "provenance": provenance()})
    dist.barrier()


@dataclass
class _Bar:
    """A one-line progress display per run on stderr (tqdm when available)."""

    name: str
    total_epochs: int

    def __post_init__(self):
        from tqdm import tqdm
        self.bar = tqdm(total=self.total_epochs, desc=self.name, unit="epoch", file=sys.stderr,
                        dynamic_ncols=True, leave=False, disable=not dist.is_main())

    def __call__(self, info: dict) -> None:
        post = {"loss": f"{info['loss']:.4f}", "samples/s": f"{info['samples_per_s']:.0f}"}
        if info.get("done"):
            post["val_srcc"] = f"{info['val_srcc']:.3f}"
            self.bar.n = info["epoch"] + 1   # also right after a resume
        else:
            post["step"] = f"{info['step']}/{info['steps']}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _chosen(specs: list[RunSpec], only: list[int] | None) -> list[tuple[int, RunSpec]]:
    if only is not None:
        bad = [i for i in only if not 0 <= i < len(specs)]
        if bad:
            raise LandscapeError(f"--only {bad[0]}: the sweep has runs 0..{len(specs) - 1} (see --list)")
    return [(i, s) for i, s in enumerate(specs) if only is None or i in only]


def run_sweep(cfg: TrainConfig, out: Path, *, force: bool = False, only: list[int] | None = None,
              resume: bool = True, progress: bool = True, echo=print) -> list[RunResult]:
    """Train every run (or the ``only`` indices); finished runs are skipped, failures reported.

    ``--pretrained`` is checked against the backbone first (nothing written if refused); then the
    chosen runs' training locks are taken (:mod:`landscape.train.locks`: a second command on the
    same runs stops at once) before the data is loaded."""
    chosen = _chosen(expand_sweep(cfg), only)
    pretrained_match(cfg)                     # refuses a file that does not fit, before --out is created
    fresh = not Path(out).exists()
    locks = TrainLocks(out, [s.name for _, s in chosen]) if dist.is_main() else contextlib.nullcontext()
    with locks:
        try:
            return _run_sweep(cfg, out, force=force, only=only, resume=resume, progress=progress, echo=echo,
                              locks=locks if isinstance(locks, TrainLocks) else None)
        except BaseException:
            if isinstance(locks, TrainLocks):
                locks.discard_created(fresh)  # e.g. refused before any write: nothing left behind
            raise


def _run_sweep(cfg: TrainConfig, out: Path, *, force: bool, only: list[int] | None, resume: bool, progress: bool,
               echo, locks: TrainLocks | None) -> list[RunResult]:
    from landscape.train import pipeline

    specs = expand_sweep(cfg)
    chosen = _chosen(specs, only)
    world = dist.world_size()
    for _, spec in chosen:
        run_config(cfg, spec, world)          # divisibility by accumulate x world size; --pretrained fits
    pre = pretrained_match(cfg)               # (cached: checked by run_config above, before any write)
    if pre is not None and dist.is_main():
        echo(pre.describe())
    datas = pipeline.load_sweep_data(cfg, [s.split_seed for _, s in chosen])
    skipped = next(iter(datas.values())).identity.get("skipped_images", [])
    if skipped and dist.is_main():
        print(f"skipping {len(skipped)} unreadable image(s) (--skip-bad-images):", file=sys.stderr)
        for item in skipped:
            print(f"  {item}", file=sys.stderr)
    for data in datas.values():
        check_split_overlap(data.dataset, cfg.allow_overlap, cfg.dataset)   # before anything is written
    for _, spec in chosen:
        check_batch_fits(datas[spec.split_seed], spec.batch_size, world)
    prepare_output(cfg, out, force)
    if locks is not None:
        locks.renew()                         # --force may have removed the lock files with the folder
    for _, spec in chosen:
        check_run_dir(Path(out) / spec.name, run_config(cfg, spec, world))
    results = []
    for i, spec in chosen:
        for other in set(datas) - {spec.split_seed}:
            datas[other].release()                # one decoded-image cache at a time
        bar = _Bar(spec.name, cfg.epochs) if progress else None
        try:
            res = train_run(cfg, spec, Path(out) / spec.name, resume=resume, progress=bar, data=datas[spec.split_seed])
        except torch.OutOfMemoryError as e:
            if dist.is_initialized():   # the other ranks cannot skip this run in step
                raise
            first = str(e).splitlines()[0] if str(e) else "out of memory"
            res = RunResult(spec.name, "failed", f"out of memory ({first[:200]})")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            warnings.warn(f"{spec.name}: {res.message}", stacklevel=2)
        finally:
            if bar:
                bar.close()
        results.append(res)
        if dist.is_main():
            m = res.metrics
            if res.status == "finished" and m:
                echo(f"[{i + 1}/{len(specs)}] {spec.name}: {res.status} (epoch {m['selected_epoch']} of "
                     f"{m['epochs_run']}) val SRCC {m['val_srcc']:.4f} test SRCC {m['test_srcc']:.4f} "
                     f"gap {m['srcc_gap']:+.4f} {m['samples_per_s']:.0f} samples/s"
                     + (f" [{res.message}]" if res.message else ""))
            else:
                echo(f"[{i + 1}/{len(specs)}] {spec.name}: {res.status.upper()}: {res.message}")
    failed = [r.name for r in results if r.status != "finished"]
    if failed and dist.is_main():
        echo(f"{len(failed)} run(s) did not finish: {', '.join(failed)}")
    return results


def sweep_runs(path: Path) -> list[Path]:
    """Run folders of a sweep folder (manifest order), or ``[path]`` for a single run folder."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return [path / name for name in manifest_run_names(path / MANIFEST)]
    if (path / "config.json").exists():
        return [path]
    raise LandscapeError(f"{path}: neither a sweep folder (no {MANIFEST}) nor a run folder (no config.json)")


def check_run_name(source: Path, name: str) -> str:
    """``name`` if it is a plain folder name (no separator, not ``.``/``..``, not absolute, no NUL), else a
    one-line error naming ``source``: a run of a sweep always lies directly inside the sweep folder."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or Path(name).is_absolute())
    if bad:
        raise LandscapeError(f"{source}: run name {name!r:.80} is not a plain folder name inside the sweep")
    return name


def distinct_runs(paths: Iterable[Path], on_duplicate: Callable[[Path, Path], None] | None = None) -> list[Path]:
    """``paths`` without those that resolve to a folder or file already listed (a run reached
    through a symlink, or named twice, counts once); ``on_duplicate(path, first)`` is told of each
    one dropped. Order kept."""
    out: list[Path] = []
    first: dict[Path, Path] = {}
    for p in map(Path, paths):
        real = p.resolve()
        if real in first:
            if on_duplicate is not None:
                on_duplicate(p, first[real])
            continue
        first[real] = p
        out.append(p)
    return out


def manifest_run_names(manifest: Path) -> list[str]:
    """Run names of a ``sweep.json`` (order kept): ``runs`` must be a list of objects with a string ``name``,
    else a one-line error naming the file and the entry."""
    data = read_json(manifest, require={"runs": list})
    names = []
    for i, entry in enumerate(data["runs"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise LandscapeError(f"{manifest}: runs[{i}] is {entry!r:.60}, need an object with a string 'name'")
        names.append(check_run_name(manifest, entry["name"]))
    return names
