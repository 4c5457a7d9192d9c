"""HyperIQA-style patch sampling: decode each image once per epoch, cut all its crops.

Images are decoded and normalised by :mod:`landscape.data.images` (shorter side resized
to ``resize_short`` and at least the patch size; ImageNet mean/std). Inputs are float32
``(N, 3, S, S)``; targets are float32 ``(N,)`` scores.

Training (:class:`TrainPatches`, a torch ``IterableDataset``): per epoch the images
are visited in a seeded order; each is decoded once and ``train_patch_num`` random
``S x S`` crops with random horizontal flips are cut from it. The crops of each
image depend only on ``(seed, epoch, image index)``; the crops of ``shuffle_window``
consecutive images are shuffled together and emitted as batches of ``batch_size``
patches (a batch may span windows; the last partial batch is kept unless
``drop_last``). With ``W`` DataLoader workers, worker ``w`` owns the images with
``index % W == w`` (a disjoint, fixed shard, so a per-worker cache stays useful), so
the multiset of patches per epoch is the same for any number of workers. Each batch
carries the image index of every patch (for masking same-image pairs in a ranking loss).

Test (:class:`TestPatches`, :func:`predict_images`): ``test_patch_num`` crops per
image, seeded random positions (depending on ``(seed, image index)`` only) or a
fixed uniform grid (``random_crop=False``), no flips; the prediction for an image is
the mean over its patches.

The analyzers' batches (one centre crop per image) are :mod:`landscape.data.analysis`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from landscape.batches import model_device
from landscape.data.images import decode_image, normalize_patches, unreadable
from landscape.data.records import ImageRecord
from landscape.errors import DataError, LandscapeError
from landscape.params import evaluation_mode

# ---------------------------------------------------------------- crops

def crop(img: np.ndarray, tops: np.ndarray, lefts: np.ndarray, size: int,
         flips: np.ndarray | None = None) -> np.ndarray:
    """Stack of ``size x size`` crops at ``(tops[i], lefts[i])``, horizontally flipped where ``flips``."""
    out = np.empty((len(tops), size, size, 3), dtype=np.uint8)
    for i, (t, left) in enumerate(zip(tops, lefts)):
        patch = img[t:t + size, left:left + size]
        out[i] = patch[:, ::-1] if flips is not None and flips[i] else patch
    return out


def random_positions(rng: np.random.Generator, shape: tuple[int, ...], size: int,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly random top-left corners of a ``size`` crop in an ``(H, W)`` image."""
    h, w = shape[:2]
    return rng.integers(0, h - size + 1, size=n), rng.integers(0, w - size + 1, size=n)


def grid_positions(shape: tuple[int, ...], size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` top-left corners on a uniform grid: ``gy = round(sqrt(n H / W))`` rows (at
    least 1), ``gx = ceil(n / gy)`` columns, evenly spaced from 0 to ``H - S`` / ``W - S``,
    taken in row-major order."""
    h, w = shape[:2]
    gy = max(1, min(n, int(round(math.sqrt(n * h / w)))))
    gx = math.ceil(n / gy)
    ys = np.round(np.linspace(0, h - size, gy)).astype(int)
    xs = np.round(np.linspace(0, w - size, gx)).astype(int)
    tops, lefts = np.meshgrid(ys, xs, indexing="ij")
    return tops.ravel()[:n], lefts.ravel()[:n]


# ---------------------------------------------------------------- training stream

class PatchBatch(NamedTuple):
    """A training batch: ``inputs`` (B, 3, S, S) float32, ``targets`` (B,) float32,
    ``image_ids`` (B,) int64 record index of each patch."""

    inputs: torch.Tensor
    targets: torch.Tensor
    image_ids: torch.Tensor


class ImageCache:
    """Decoded uint8 images kept in RAM up to ``budget_bytes`` (first come, first kept)."""

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self.used = 0
        self.images: dict[int, np.ndarray] = {}

    def get(self, key: int) -> np.ndarray | None:
        return self.images.get(key)

    def put(self, key: int, img: np.ndarray) -> None:
        if key not in self.images and self.used + img.nbytes <= self.budget:
            self.images[key] = img
            self.used += img.nbytes


@dataclass(frozen=True)
class TrainPatchConfig:
    """Settings of the training stream (record them with every run)."""

    patch_size: int
    train_patch_num: int = 20
    batch_size: int = 32
    seed: int = 0
    shuffle_window: int = 32
    hflip: bool = True
    drop_last: bool = False
    resize_short: int | None = None
    cache_mb: float = 0.0
    skip_bad: bool = False


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise LandscapeError(f"{name} must be >= 1 (got {v})")


class TrainPatches(IterableDataset):
    """Epoch stream of :class:`PatchBatch` (module docstring). Call :meth:`set_epoch` before
    each epoch; use :func:`train_loader` for DataLoader workers.

    ``cache_mb``: RAM budget for decoded images (split evenly between workers; with
    workers the cache lives as long as the persistent workers). Bad images raise
    :class:`DataError` unless ``skip_bad``, in which case they are skipped, warned about
    and listed by :meth:`bad_records`.
    """

    def __init__(self, records: Sequence[ImageRecord], config: TrainPatchConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = TrainPatchConfig(**kwargs)
        elif kwargs:
            raise LandscapeError("TrainPatches: give a config or keyword settings, not both")
        _check_positive(patch_size=config.patch_size, train_patch_num=config.train_patch_num,
                        batch_size=config.batch_size, shuffle_window=config.shuffle_window)
        if not records:
            raise DataError("TrainPatches: no training images")
        self.records = list(records)
        self.config = config
        self.paths = [r.path for r in self.records]
        self.scores = np.array([r.score for r in self.records], dtype=np.float32)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad = torch.zeros(len(self.records), dtype=torch.bool).share_memory_()
        self._cache: ImageCache | None = None

    # -- bookkeeping
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (crops and order depend on ``(seed, epoch)``); visible to workers."""
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def num_patches(self) -> int:
        """Patches per epoch: ``n_images * train_patch_num`` (minus skipped images)."""
        return (len(self.records) - int(self._bad.sum())) * self.config.train_patch_num

    def num_batches(self, workers: int = 0) -> int:
        """Batches per epoch with ``workers`` DataLoader workers (each worker ends with its own
        partial batch)."""
        n_w = max(1, workers)
        total = 0
        for w in range(n_w):
            n = len(range(w, len(self.records), n_w)) * self.config.train_patch_num
            total += n // self.config.batch_size if self.config.drop_last else math.ceil(n / self.config.batch_size)
        return total

    def bad_records(self) -> list[ImageRecord]:
        """Records skipped as unreadable (with ``skip_bad``), across all workers."""
        return [r for r, b in zip(self.records, self._bad.tolist()) if b]

    # -- decoding
    def _image(self, idx: int, n_workers: int) -> np.ndarray | None:
        cfg = self.config
        if cfg.cache_mb > 0 and self._cache is None:
            self._cache = ImageCache(int(cfg.cache_mb * 2 ** 20 / n_workers))
        if self._cache is not None and (img := self._cache.get(idx)) is not None:
            return img
        try:
            img = decode_image(self.paths[idx], resize_short=cfg.resize_short, min_side=cfg.patch_size)
        except DataError as e:
            if not cfg.skip_bad:
                raise unreadable(e) from None
            self._bad[idx] = True
            warnings.warn(f"skipped {e}", stacklevel=2)
            return None
        if self._cache is not None:
            self._cache.put(idx, img)
        return img

    def image_patches(self, idx: int, img: np.ndarray, epoch: int | None = None) -> np.ndarray:
        """The ``train_patch_num`` uint8 crops of image ``idx`` for ``epoch`` (default: current)."""
        cfg = self.config
        ep = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([cfg.seed, ep, idx, 0])
        tops, lefts = random_positions(rng, img.shape, cfg.patch_size, cfg.train_patch_num)
        flips = rng.random(cfg.train_patch_num) < 0.5 if cfg.hflip else None
        return crop(img, tops, lefts, cfg.patch_size, flips)

    # -- iteration
    def __iter__(self) -> Iterator[PatchBatch]:
        info = get_worker_info()
        n_workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self._iterate(self.epoch, n_workers, worker)

    def _iterate(self, epoch: int, n_workers: int, worker: int) -> Iterator[PatchBatch]:
        cfg = self.config
        shard = np.arange(worker, len(self.records), n_workers)
        rng = np.random.default_rng([cfg.seed, epoch, n_workers, worker, 1])
        order = shard[rng.permutation(len(shard))]
        # pending windows: (per-image crop stacks, image ids, shuffled order, next position); a
        # batch gathers its patches straight from the windows it spans (one copy per patch)
        pend: list[list] = []
        pending = 0
        for start in range(0, len(order), cfg.shuffle_window):
            xs, ids = [], []
            for idx in order[start:start + cfg.shuffle_window]:
                img = self._image(int(idx), n_workers)
                if img is None:
                    continue
                xs.append(self.image_patches(int(idx), img, epoch))
                ids.append(np.full(cfg.train_patch_num, idx, dtype=np.int64))
            if not xs:
                continue
            perm = rng.permutation(len(xs) * cfg.train_patch_num)
            pend.append([xs, np.concatenate(ids), perm, 0])
            pending += len(perm)
            while pending >= cfg.batch_size:
                yield self._batch(*_take(pend, cfg.batch_size))
                pending -= cfg.batch_size
        if pending and not cfg.drop_last:
            yield self._batch(*_take(pend, pending))

    def _batch(self, x: np.ndarray, ids: np.ndarray) -> PatchBatch:
        return PatchBatch(normalize_patches(x), torch.from_numpy(self.scores[ids].copy()),
                          torch.from_numpy(ids.copy()))


def _take(pend: list[list], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The next ``n`` patches and image ids of the pending windows, in shuffled order
    (consumed windows are dropped from ``pend``)."""
    xs, ids = [], []
    while n:
        stacks, i, perm, pos = pend[0]
        sel = perm[pos:pos + n]
        per = len(stacks[0])
        xs.append(np.stack([stacks[j // per][j % per] for j in sel]))
        ids.append(i[sel])
        n -= len(sel)
        if pos + len(sel) == len(perm):
            pend.pop(0)
        else:
            pend[0][3] = pos + len(sel)
    if len(xs) == 1:
        return xs[0], ids[0]
    return np.concatenate(xs), np.concatenate(ids)


class _OneLineErrors:
    """Iterate a DataLoader, turning a worker's multi-line DataError back into one line."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        try:
            yield from self.loader
        except DataError as e:
            lines = [ln for ln in str(e).splitlines() if ln.strip()]
            last = lines[-1] if lines else str(e)
            raise DataError(last.split("DataError: ", 1)[-1]) from None


def train_loader(stream: TrainPatches, workers: int = 0, pin_memory: bool = False):
    """Iterable of :class:`PatchBatch` for the stream's current epoch.

    ``workers=0``: the stream itself (in-process). Otherwise a DataLoader with
    persistent workers (``batch_size=None``: batches are built in the workers); call
    ``stream.set_epoch(e)`` before iterating it for epoch ``e``.
    """
    if workers <= 0:
        return stream
    return _OneLineErrors(DataLoader(stream, batch_size=None, num_workers=workers,
                                     persistent_workers=True, pin_memory=pin_memory))


# ---------------------------------------------------------------- test protocol

class TestPatches(Dataset):
    """Per-image stacks of test crops: item ``i`` = ``(patches (P, 3, S, S) float32, score, i)``,
    or None for an unreadable image when ``skip_bad``.

    Crops: seeded random positions (``np.random.default_rng([seed, i, 1])``) or, with
    ``random_crop=False``, :func:`grid_positions`. No flips.
    """

    __test__ = False  # not a pytest class

    def __init__(self, records: Sequence[ImageRecord], *, patch_size: int, test_patch_num: int = 20,
                 seed: int = 0, random_crop: bool = True, resize_short: int | None = None,
                 skip_bad: bool = False):
        _check_positive(patch_size=patch_size, test_patch_num=test_patch_num)
        self.records = list(records)
        self.patch_size, self.test_patch_num = int(patch_size), int(test_patch_num)
        self.seed, self.random_crop = int(seed), bool(random_crop)
        self.resize_short, self.skip_bad = resize_short, skip_bad

    def __len__(self) -> int:
        return len(self.records)

    def positions(self, i: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if self.random_crop:
            rng = np.random.default_rng([self.seed, i, 1])
            return random_positions(rng, shape, self.patch_size, self.test_patch_num)
        return grid_positions(shape, self.patch_size, self.test_patch_num)

    def __getitem__(self, i: int):
        rec = self.records[i]
        try:
            img = decode_image(rec.path, resize_short=self.resize_short, min_side=self.patch_size)
        except DataError as e:
            if self.skip_bad:
                return None
            raise unreadable(e) from None
        tops, lefts = self.positions(i, img.shape)
        return normalize_patches(crop(img, tops, lefts, self.patch_size)), float(rec.score), i


def _collate_images(items):
    items = [it for it in items if it is not None]
    if not items:
        return None
    return (torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.float64),
            torch.tensor([it[2] for it in items], dtype=torch.int64))


@dataclass
class Predictions:
    """Per-image predictions (mean over patches) and labels, in record order.

    ``patch_std``: standard deviation of the patch predictions of each image (ddof=0);
    ``skipped``: paths of unreadable images left out (``skip_bad``; each is also warned about).
    Unpacks as ``pred, score``.
    """

    pred: np.ndarray
    score: np.ndarray
    patch_std: np.ndarray
    paths: list[str]
    skipped: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter((self.pred, self.score))


def predict_images(model: nn.Module, records: Sequence[ImageRecord], *, patch_size: int,
                   test_patch_num: int = 20, seed: int = 0, random_crop: bool = True,
                   batch_size: int = 64, resize_short: int | None = None, workers: int = 0,
                   skip_bad: bool = False, device: torch.device | str | None = None) -> Predictions:
    """Predict each image as the mean of the model's outputs over its ``test_patch_num`` crops.

    Patches go through the model in chunks of at most ``batch_size`` under
    ``torch.inference_mode`` in eval mode (each submodule's train flag is restored).
    The model must return one number per patch (shape ``(B,)`` or ``(B, 1)``).
    """
    _check_positive(batch_size=batch_size)
    if not records:
        raise DataError("predict_images: no images")
    ds = TestPatches(records, patch_size=patch_size, test_patch_num=test_patch_num, seed=seed,
                     random_crop=random_crop, resize_short=resize_short, skip_bad=skip_bad)
    per_batch = max(1, batch_size // test_patch_num)
    loader = _OneLineErrors(DataLoader(ds, batch_size=per_batch, shuffle=False, num_workers=max(0, workers),
                                       collate_fn=_collate_images))
    dev = torch.device(device) if device is not None else model_device(model)
    preds, stds, scores, idx = [], [], [], []
    with evaluation_mode(model), torch.inference_mode():
        for item in loader:
            if item is None:
                continue
            x, y, i = item
            flat = x.reshape(-1, *x.shape[2:])
            outs = []
            for j in range(0, flat.shape[0], batch_size):
                chunk = flat[j:j + batch_size].to(dev, non_blocking=True)
                out = model(chunk)
                if out.numel() != chunk.shape[0]:
                    raise LandscapeError(f"model returned {tuple(out.shape)} outputs for {chunk.shape[0]} "
                                         f"patches; expected one score per patch")
                outs.append(out.reshape(-1).double().cpu())
            per_patch = torch.cat(outs).view(x.shape[0], x.shape[1])
            preds.append(per_patch.mean(1))
            stds.append(per_patch.std(1, unbiased=False))
            scores.append(y)
            idx.append(i)
    if not idx:
        raise DataError("predict_images: every image was unreadable")
    used = torch.cat(idx).tolist()
    used_set = set(used)
    for k, r in enumerate(records):
        if k not in used_set:
            warnings.warn(f"skipped {r.path}: unreadable image (left out of the evaluation)", stacklevel=2)
    return Predictions(pred=torch.cat(preds).numpy(), score=torch.cat(scores).numpy(),
                       patch_std=torch.cat(stds).numpy(), paths=[records[k].path for k in used],
                       skipped=[r.path for k, r in enumerate(records) if k not in used_set])
