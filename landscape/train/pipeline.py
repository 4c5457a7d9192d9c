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
from landscape.models import model_config
from landscape.provenance import hash_indices
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
    _streams: dict = field(default_factory=dict)

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


def load_run_data(cfg: TrainConfig) -> RunData:
    """Load the dataset, the fixed train-eval subset and the cross-test sets of a config.

    Every image is decoded once before training starts: unreadable ones stop the job with
    one line that counts them, or with ``skip_bad_images`` are left out and listed in the
    dataset identity (``skipped_images``, written to ``dataset.json``).
    """
    ds = load_dataset_spec(cfg.dataset, score_column=cfg.score_column, split_seed=cfg.split_seed)
    good, skipped = readable_records(ds.records, skip_bad=cfg.skip_bad_images, where=cfg.dataset)
    keep = {r.path for r in good}
    splits = {s: [r for r in ds.split(s) if r.path in keep] for s in ("train", "val", "test")}
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
    identity = {**ds.identity(), "train_eval_images": n_sub, "train_eval_sha256": hash_indices(sub),
                "skipped_images": skipped}
    cross_names = []
    for k, spec in enumerate(cfg.cross_test):
        cds = load_dataset_spec(spec, split_seed=cfg.split_seed)
        name = f"cross{k}_{cds.format}"
        records = cds.split("test") or list(cds.records)
        records, cross_skipped = readable_records(records, skip_bad=cfg.skip_bad_images, where=spec)
        sets[name] = EvalSet(records, cds.resize_short)
        identity[name] = {**cds.identity(), "used": "test split" if cds.split("test") else "all images",
                          "skipped_images": cross_skipped}
        cross_names.append(name)
    patch = model_config(cfg.model).img_size
    return RunData(cfg, ds, train, sets, cross_names, identity, patch)


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

