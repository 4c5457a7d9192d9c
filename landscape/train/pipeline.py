"""The trainer's data pipeline over :mod:`landscape.data`: patch streams, evaluation sets, targets.

Targets are normalised scores ``t = (s - lo) / (hi - lo)`` with ``(lo, hi)`` the dataset's
declared score range (:func:`landscape.data.targets.normalise`, the map the analyzers'
batches of :mod:`landscape.data.analysis` use too), so losses and curvature are comparable
across datasets; SRCC, PLCC and KRCC are invariant to this map. Evaluation uses the test protocol (mean over
``test_patches`` crops, seed 0) on val, test, a fixed training subset (``train``:
``train_eval_images`` images drawn with seed 0, the same for every run; its index hash
is in the dataset identity) and each cross-test set.

Steps per epoch: with ``world`` ranks rank ``r`` trains on ``train[r::world]``; each
of its ``workers`` DataLoader workers ends with its own partial batch, so a rank has
``sum_w ceil(n_{r,w} P / b)`` batches (``n_{r,w}`` images of worker ``w``, ``P`` patches,
``b`` per-rank batch). Every rank runs the minimum of that over ranks (DDP needs the
same number of all-reduces on every rank; the few surplus patches of larger shards are
skipped), and the LR schedule is laid out over exactly those steps.

Splits (``cfg.split``, ``cfg.split_ratio``, one split seed per run): :func:`load_run_data`
loads the dataset with that split; :func:`load_sweep_data` loads one :class:`RunData` per
split seed of a sweep, decoding every image only once. Each records the split it used
(:meth:`RunData.split_record`, written to a run's ``split.json``): per split the sorted
relative image paths, their row indices in the annotation and
:func:`landscape.provenance.hash_indices` of those indices; ``split_sha256`` is
:func:`landscape.provenance.content_key` (64 hex digits) of the three split hashes. A zero val
share (``split_ratio`` ``0.8:0:0.2``, HyperIQA's paper mode) has no validation images: the
``val`` evaluation set is then the test split (epochs selected on test, as in that paper;
``dataset.json`` says ``"val_source": "test"``).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from landscape import distributed as dist
from landscape.data.check import readable_records
from landscape.data.loading import load_dataset_spec
from landscape.data.patches import TrainPatchConfig, TrainPatches, predict_images, train_loader
from landscape.data.records import ImageRecord, IQADataset
from landscape.data.targets import normalise
from landscape.errors import LandscapeError
from landscape.models.trainable import input_size
from landscape.provenance import content_key, hash_indices
from landscape.train.config import TrainConfig
from landscape.train.step import autocast_context

CACHE_MB = 2048.0   # RAM budget for decoded training images (per process)


@dataclass
class EvalSet:
    records: list[ImageRecord]
    resize_short: int | None


@dataclass
class RunData:
    cfg: TrainConfig
    dataset: IQADataset
    train: list[ImageRecord]
    eval_sets: dict[str, EvalSet]
    cross_names: list[str]
    identity: dict
    patch_size: int
    split_seed: int = 0
    split_record: dict = field(default_factory=dict)
    readable: frozenset = frozenset()       # paths of the images that decoded
    _streams: dict = field(default_factory=dict)

    @property
    def split_sha256(self) -> str:
        """Hash of the split this data uses (module docstring)."""
        return self.split_record["split_sha256"]

    def release(self) -> None:
        """Drop the live training stream (its decoded-image cache and workers)."""
        self._streams = {}

    @property
    def n_train_patches(self) -> int:
        return len(self.train) * self.cfg.train_patches

    def min_rank_patches(self, world: int = 1) -> int:
        """Training patches per epoch of the smallest rank shard."""
        return len(self.train[world - 1::world]) * self.cfg.train_patches

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        """Optimizer steps per epoch of every rank (module docstring)."""
        per_rank = batch_size // world
        workers = max(1, self.cfg.workers)
        counts = []
        for r in range(world):
            n_r = len(self.train[r::world])
            counts.append(sum(math.ceil(len(range(w, n_r, workers)) * self.cfg.train_patches / per_rank)
                              for w in range(workers)))
        return min(counts)

    def stream(self, per_rank_batch: int, seed: int, world: int, rank: int, pin_memory: bool = False):
        key = (per_rank_batch, seed, world, rank)
        if key not in self._streams:
            records = self.train[rank::world]
            tp = TrainPatches(records, TrainPatchConfig(
                patch_size=self.patch_size, train_patch_num=self.cfg.train_patches, batch_size=per_rank_batch,
                seed=seed, resize_short=self.dataset.resize_short, cache_mb=CACHE_MB,
                skip_bad=self.cfg.skip_bad_images))
            loader = train_loader(tp, self.cfg.workers, pin_memory=pin_memory and self.cfg.workers > 0)
            self._streams = {key: (tp, loader)}  # one live stream at a time
        return self._streams[key]

    def train_batches(self, spec, epoch: int, world: int = 1,
                      pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``(patches, targets)`` of this rank for ``epoch`` (deterministic in seed,
        epoch): exactly :meth:`steps_per_epoch` batches."""
        tp, loader = self.stream(spec.batch_size // world, spec.seed, world, dist.rank(), pin_memory)
        tp.set_epoch(epoch)
        for batch in itertools.islice(loader, self.steps_per_epoch(spec.batch_size, world)):
            yield batch.inputs, normalise(batch.targets, self.dataset.score_range)


def load_run_data(cfg: TrainConfig, split_seed: int | None = None) -> RunData:
    """Load the dataset (split ``cfg.split`` with ``split_seed``, default the first of
    ``cfg.split_seeds``), the fixed train-eval subset and the cross-test sets of a config.

    Every image is decoded once before training starts: unreadable ones stop the job with
    one line that counts them, or with ``skip_bad_images`` are left out and listed in the
    dataset identity (``skipped_images``, written to ``dataset.json``).
    """
    return _load(cfg, cfg.split_seed if split_seed is None else int(split_seed), None)


def load_sweep_data(cfg: TrainConfig, split_seeds: list[int] | None = None) -> dict[int, RunData]:
    """One :class:`RunData` per split seed (default: all of ``cfg.split_seeds``); images decoded
    once, cross-test sets shared."""
    seeds = list(dict.fromkeys(cfg.split_seeds if split_seeds is None else split_seeds))
    first = _load(cfg, seeds[0], None)
    out = {seeds[0]: first}
    for seed in seeds[1:]:
        out[seed] = _load(cfg, seed, first)
    return out


def _split_record(ds: IQADataset, cfg: TrainConfig, split_seed: int, keep: set[str]) -> dict:
    """What ``split.json`` holds (module docstring)."""
    record: dict = {"dataset": cfg.dataset, "split": cfg.split, "split_seed": split_seed,
                    "split_ratio": list(cfg.split_ratio), "rule": ds.split_rule, "splits": {}}
    for name in ("train", "val", "test"):
        rows = [(ds.relative(r), i) for i, r in enumerate(ds.records) if r.split == name and r.path in keep]
        indices = sorted(i for _, i in rows)
        record["splits"][name] = {"n": len(rows), "indices": indices, "indices_sha256": hash_indices(indices),
                                  "paths": sorted(path for path, _ in rows)}
    record["split_sha256"] = content_key({k: v["indices_sha256"] for k, v in record["splits"].items()}, 64)
    return record


def _load(cfg: TrainConfig, split_seed: int, base: RunData | None) -> RunData:
    """:func:`load_run_data`; with ``base`` (another split seed's data) its decode check and cross sets are reused."""
    ds = load_dataset_spec(cfg.dataset, score_column=cfg.score_column, split_seed=split_seed,
                           split_mode=cfg.split, split_ratios=cfg.split_ratio)
    if len(cfg.split_seeds) > 1 and not ds.split_rule.startswith("seeded"):
        raise LandscapeError(f"{cfg.dataset}: uses its {ds.split_rule} split, so split seeds "
                             f"{', '.join(map(str, cfg.split_seeds))} would train the same runs; use --split random")
    if base is None:
        good, skipped = readable_records(ds.records, skip_bad=cfg.skip_bad_images, where=cfg.dataset)
        keep = {r.path for r in good}
    else:
        skipped, keep = base.identity["skipped_images"], set(base.readable)
    splits = {s: [r for r in ds.split(s) if r.path in keep] for s in ("train", "val", "test")}
    val_source = "val"
    if not splits["val"] and cfg.split_ratio[1] == 0 and ds.split_rule.startswith("seeded"):
        splits["val"], val_source = splits["test"], "test"
    for split, records in splits.items():
        if not records:
            raise LandscapeError(f"{cfg.dataset}: the '{split}' split is empty")
    train = splits["train"]
    rng = np.random.default_rng(0)
    n_sub = min(cfg.train_eval_images, len(train))
    sub = sorted(int(i) for i in rng.choice(len(train), n_sub, replace=False))
    sets = {"train": EvalSet([train[i] for i in sub], ds.resize_short),
            "val": EvalSet(splits["val"], ds.resize_short),
            "test": EvalSet(splits["test"], ds.resize_short)}
    split_record = _split_record(ds, cfg, split_seed, keep)
    identity = {**ds.identity(), "train_eval_images": n_sub, "train_eval_sha256": hash_indices(sub),
                "skipped_images": skipped, "val_source": val_source}
    cross_names = []
    if base is not None:
        cross_names = list(base.cross_names)
        sets.update({name: base.eval_sets[name] for name in cross_names})
        identity.update({name: base.identity[name] for name in cross_names})
    for k, spec in enumerate(cfg.cross_test if base is None else []):
        cds = load_dataset_spec(spec, split_seed=cfg.split_seeds[0])
        name = f"cross{k}_{cds.format}"
        records = cds.split("test") or list(cds.records)
        records, cross_skipped = readable_records(records, skip_bad=cfg.skip_bad_images, where=spec)
        sets[name] = EvalSet(records, cds.resize_short)
        identity[name] = {**cds.identity(), "used": "test split" if cds.split("test") else "all images",
                          "skipped_images": cross_skipped}
        cross_names.append(name)
    patch = input_size(cfg.model, cfg.img_size)
    return RunData(cfg, ds, train, sets, cross_names, identity, patch, split_seed, split_record, frozenset(keep))


def predict(model: torch.nn.Module, es: EvalSet, cfg: TrainConfig, device: torch.device,
            batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image predictions (mean over test crops, seed 0) and raw scores; bf16 autocast
    on CUDA when ``cfg.amp`` (as in training); images decoded by ``cfg.workers`` processes."""
    with autocast_context(device, cfg.amp):
        p = predict_images(model, es.records, patch_size=model.config.img_size, test_patch_num=cfg.test_patches,
                           seed=0, random_crop=cfg.test_random_crop, batch_size=max(64, batch_size),
                           resize_short=es.resize_short, skip_bad=cfg.skip_bad_images, device=device,
                           workers=cfg.workers)
    return p.pred, p.score

