"""Patch sampling: decode once per epoch, determinism, workers, test crops, predictions."""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from landscape.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageRecord,
    TestPatches,
    TrainPatches,
    analysis_batches,
    decode_image,
    predict_images,
    train_loader,
)
from landscape.data.patches import grid_positions
from landscape.errors import DataError, LandscapeError

S = 16  # patch size


def _records(tmp_path: Path, n=6) -> list[ImageRecord]:
    recs = []
    sizes = [(40, 30), (32, 48), (20, 20), (36, 24), (12, 10), (44, 28), (30, 30), (26, 34)]
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        arr = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = tmp_path / f"im{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(arr).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(arr).save(path)
        recs.append(ImageRecord(str(path), float(10 * i + 1), "train", f"g{i}"))
    return recs


def _denorm(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _epoch(stream: TrainPatches, epoch: int, workers=0):
    stream.set_epoch(epoch)
    return list(train_loader(stream, workers))


def _patch_keys(batches) -> list[tuple]:
    keys = []
    for b in batches:
        for x, y, i in zip(b.inputs, b.targets, b.image_ids):
            keys.append((int(i), float(y), hashlib.sha256(x.numpy().tobytes()).hexdigest()))
    return sorted(keys)


@pytest.fixture()
def count_opens(monkeypatch):
    counts: Counter = Counter()
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        counts[str(fp)] += 1
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return counts


def test_each_image_decoded_once_per_epoch(tmp_path, count_opens):
    recs = _records(tmp_path)
    stream = TrainPatches(recs, patch_size=S, train_patch_num=5, batch_size=7, seed=0, shuffle_window=4)
    batches = _epoch(stream, 0)
    assert dict(count_opens) == {r.path: 1 for r in recs}
    n = sum(b.inputs.shape[0] for b in batches)
    assert n == len(recs) * 5 == stream.num_patches()
    assert [b.inputs.shape[0] for b in batches] == [7] * 4 + [2] and len(batches) == stream.num_batches()
    assert Counter(int(i) for b in batches for i in b.image_ids) == {k: 5 for k in range(len(recs))}
    for b in batches:
        assert b.inputs.dtype == torch.float32 and b.inputs.shape[1:] == (3, S, S)
        np.testing.assert_array_equal(b.targets.numpy(), [recs[int(i)].score for i in b.image_ids])
    dropped = TrainPatches(recs, patch_size=S, train_patch_num=5, batch_size=7, drop_last=True)
    assert [b.inputs.shape[0] for b in _epoch(dropped, 0)] == [7] * 4


def test_cache_avoids_decoding_again(tmp_path, count_opens):
    recs = _records(tmp_path)
    stream = TrainPatches(recs, patch_size=S, train_patch_num=2, batch_size=4, cache_mb=1.0)
    first = _epoch(stream, 0)
    _epoch(stream, 1)
    assert sum(count_opens.values()) == len(recs)  # epoch 1 came from the cache
    fresh = TrainPatches(recs, patch_size=S, train_patch_num=2, batch_size=4)
    assert _patch_keys(first) == _patch_keys(_epoch(fresh, 0))  # caching does not change the data


def test_patches_are_crops_with_flips(tmp_path):
    recs = _records(tmp_path, n=2)
    stream = TrainPatches(recs, patch_size=S, train_patch_num=12, batch_size=24, seed=1)
    (batch,) = _epoch(stream, 0)
    flipped = 0
    for x, i in zip(_denorm(batch.inputs), batch.image_ids):
        img = decode_image(recs[int(i)].path, min_side=S)
        h, w = img.shape[:2]
        found = None
        for t in range(h - S + 1):
            for left in range(w - S + 1):
                c = img[t:t + S, left:left + S]
                if np.array_equal(c, x):
                    found = "plain"
                elif np.array_equal(c[:, ::-1], x):
                    found = found or "flip"
        assert found is not None
        flipped += found == "flip"
    assert 0 < flipped < 24


def test_determinism_per_seed_and_epoch(tmp_path):
    recs = _records(tmp_path)
    make = lambda seed: TrainPatches(recs, patch_size=S, train_patch_num=3, batch_size=5, seed=seed)  # noqa: E731
    a0, b0 = _epoch(make(0), 0), _epoch(make(0), 0)
    assert len(a0) == len(b0)
    for a, b in zip(a0, b0):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.image_ids, b.image_ids)
    a1 = _epoch(make(0), 1)
    assert _patch_keys(a0) != _patch_keys(a1)
    assert not torch.equal(a0[0].image_ids, a1[0].image_ids) or not torch.equal(a0[0].inputs, a1[0].inputs)
    assert _patch_keys(_epoch(make(1), 0)) != _patch_keys(a0)


def test_workers_give_same_multiset(tmp_path):
    recs = _records(tmp_path, n=7)
    stream = TrainPatches(recs, patch_size=S, train_patch_num=3, batch_size=4, seed=2, shuffle_window=2)
    in_process = _epoch(stream, 3)
    loader = train_loader(stream, workers=2)
    stream.set_epoch(3)
    two = list(loader)
    assert _patch_keys(two) == _patch_keys(in_process)
    assert len(two) == stream.num_batches(workers=2)
    stream.set_epoch(4)  # persistent workers see the new epoch
    assert _patch_keys(list(loader)) == _patch_keys(_epoch(stream, 4))


def test_unreadable_image_named_or_skipped(tmp_path):
    recs = _records(tmp_path)
    Path(recs[2].path).write_bytes(b"garbage")
    stream = TrainPatches(recs, patch_size=S, train_patch_num=2, batch_size=4)
    with pytest.raises(DataError, match=r"im2.jpg: unreadable image"):
        _epoch(stream, 0)
    with pytest.raises(DataError, match=r"^[^\n]*im2.jpg: unreadable image[^\n]*$"):
        _epoch(stream, 0, workers=2)
    skipping = TrainPatches(recs, patch_size=S, train_patch_num=2, batch_size=4, skip_bad=True)
    with pytest.warns(UserWarning, match="im2.jpg"):
        batches = _epoch(skipping, 0)
    assert sum(b.inputs.shape[0] for b in batches) == (len(recs) - 1) * 2
    assert [r.path for r in skipping.bad_records()] == [recs[2].path]
    pred = predict_images(_MeanModel(), recs, patch_size=S, test_patch_num=2, skip_bad=True)
    assert pred.skipped == [recs[2].path] and len(pred.pred) == len(recs) - 1


def test_decode_resizing(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg")
    assert decode_image(str(tmp_path / "a.jpg"), resize_short=30).shape == (30, 40, 3)
    assert decode_image(str(tmp_path / "a.jpg"), min_side=90).shape == (90, 120, 3)  # small images go up
    assert decode_image(str(tmp_path / "a.jpg"), min_side=20).shape == (60, 80, 3)
    with pytest.raises(DataError, match="nope.png: unreadable image"):
        decode_image(str(tmp_path / "nope.png"))


def test_grid_positions():
    tops, lefts = grid_positions((30, 40), 10, 4)
    assert list(zip(tops, lefts)) == [(0, 0), (0, 30), (20, 0), (20, 30)]
    tops, lefts = grid_positions((10, 50), 10, 3)  # one row, evenly spaced
    assert list(tops) == [0, 0, 0] and list(lefts) == [0, 20, 40]


def test_test_crops_deterministic(tmp_path):
    recs = _records(tmp_path)
    a = TestPatches(recs, patch_size=S, test_patch_num=4, seed=3)
    b = TestPatches(recs, patch_size=S, test_patch_num=4, seed=3)
    c = TestPatches(recs, patch_size=S, test_patch_num=4, seed=4)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(recs)))
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(len(recs)))
    g1 = TestPatches(recs, patch_size=S, test_patch_num=4, seed=3, random_crop=False)
    g2 = TestPatches(recs, patch_size=S, test_patch_num=4, seed=9, random_crop=False)
    assert all(torch.equal(g1[i][0], g2[i][0]) for i in range(len(recs)))
    x, score, idx = a[1]
    assert x.shape == (4, 3, S, S) and score == recs[1].score and idx == 1


class _MeanModel(nn.Module):
    """Score = mean input value per patch; records the train flag seen in forward."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.seen_training: list[bool] = []

    def forward(self, x):
        self.seen_training.append(self.drop.training)
        return self.drop(x).mean(dim=(1, 2, 3)).unsqueeze(1)


def test_predict_images_mean_over_patches(tmp_path):
    recs = _records(tmp_path)
    model = _MeanModel().train()
    ds = TestPatches(recs, patch_size=S, test_patch_num=5, seed=0)
    expect = np.array([ds[i][0].double().mean(dim=(1, 2, 3)).mean().item() for i in range(len(recs))])
    for batch_size in (3, 64):  # chunks smaller than one image's stack, and several images per chunk
        pred = predict_images(model, recs, patch_size=S, test_patch_num=5, seed=0, batch_size=batch_size)
        np.testing.assert_allclose(pred.pred, expect, rtol=1e-5, atol=1e-6)
        p, s = pred
        np.testing.assert_array_equal(s, [r.score for r in recs])
        assert pred.patch_std.shape == (len(recs),) and (pred.patch_std > 0).all()
    assert model.training and model.drop.training and not any(model.seen_training)

    class Two(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2)

    with pytest.raises(LandscapeError, match="expected one score per patch"):
        predict_images(Two(), recs, patch_size=S, test_patch_num=2)


def test_analysis_batches(tmp_path):
    recs = _records(tmp_path, n=8)
    batches, idx = analysis_batches(recs, 5, 2, S, seed=0)
    assert idx == sorted(idx) and len(set(idx)) == 5
    assert idx == sorted(np.random.default_rng(0).choice(8, 5, replace=False).tolist())
    assert [x.shape[0] for x, _ in batches] == [2, 2, 1]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    np.testing.assert_array_equal(y.numpy(), np.array([recs[k].score for k in idx], dtype=np.float32))
    for crop, k in zip(_denorm(x), idx):
        img = decode_image(recs[k].path, min_side=S)
        h, w = img.shape[:2]
        t, left = (h - S) // 2, (w - S) // 2
        np.testing.assert_array_equal(crop, img[t:t + S, left:left + S])
    again, idx2 = analysis_batches(recs, 5, 2, S, seed=0)
    assert idx2 == idx and all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    everything, all_idx = analysis_batches(recs, None, 3, S)
    assert all_idx == list(range(8)) and sum(b[0].shape[0] for b in everything) == 8
