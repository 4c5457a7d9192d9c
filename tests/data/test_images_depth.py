"""High-bit-depth images are read at their true values; an image in two splits is an error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from landscape.data.check import check_dataset, check_split_overlap, readable_records, split_overlaps
from landscape.data.images import decode_image, normalize_patches, read_image
from landscape.data.loading import load_dataset
from landscape.errors import DataError

RNG = np.random.default_rng(0)


def _png16(path, arr):
    im = Image.fromarray(arr.astype(np.uint16))
    assert im.mode == "I;16"
    im.save(path)
    return path


def test_16bit_png_and_tiff_read_at_true_values(tmp_path):
    arr = RNG.integers(0, 65536, size=(40, 48))
    arr[0, 0], arr[0, 1] = 0, 65535
    for name in ("g16.png", "g16.tif"):
        path = _png16(tmp_path / name, arr)
        with Image.open(path) as im:
            assert im.mode.startswith("I;16")
        full = read_image(str(path))
        assert full.shape == (40, 48, 3) and full.dtype == np.float32
        np.testing.assert_allclose(full, np.repeat((arr / 65535.0)[:, :, None], 3, axis=2), atol=1e-6, rtol=0)
        img8 = decode_image(str(path))
        assert np.array_equal(img8, np.repeat(np.round(arr * 255.0 / 65535.0).astype(np.uint8)[:, :, None], 3, axis=2))
        assert img8.min() == 0 and img8.max() == 255 and len(np.unique(img8)) > 200     # not an all-white read
        x = normalize_patches(img8[None, :32, :32])
        ref = torch.from_numpy(np.round(arr[:32, :32] * 255.0 / 65535.0) / 255.0).float()
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        assert torch.allclose(x[0], (ref[None] - mean[:, None, None]) / std[:, None, None], atol=1e-5)


def test_8bit_unchanged_and_float_images_checked(tmp_path):
    arr8 = RNG.integers(0, 256, size=(20, 24, 3)).astype(np.uint8)
    Image.fromarray(arr8).save(tmp_path / "rgb.png")
    assert np.array_equal(decode_image(str(tmp_path / "rgb.png")), arr8)
    np.testing.assert_allclose(read_image(str(tmp_path / "rgb.png")), arr8 / 255.0, atol=1e-7)
    good = RNG.random((16, 16)).astype(np.float32)
    Image.fromarray(good, "F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(str(tmp_path / "f.tif"))[:, :, 1], good, atol=1e-7)
    Image.fromarray(good * 1000.0, "F").save(tmp_path / "hdr.tif")
    with pytest.raises(DataError, match=r"hdr.tif: 32-bit float image with values outside \[0, 1\]"):
        decode_image(str(tmp_path / "hdr.tif"))


def _csv_dataset(tmp_path, rows):
    folder = tmp_path / "ds"
    folder.mkdir()
    for name in {r[0] for r in rows}:
        Image.fromarray(RNG.integers(0, 256, size=(40, 40, 3)).astype(np.uint8)).save(folder / name)
    (folder / "scores.csv").write_text("path,score,split\n" + "".join(f"{p},{s},{sp}\n" for p, s, sp in rows))
    return folder


def test_data_check_reads_16bit_and_reports_split_overlap(tmp_path):
    rows = [(f"i{k}.png", k / 10, sp) for k, sp in enumerate(["train"] * 4 + ["val", "test"])]
    rows.append(("i0.png", 0.0, "test"))                               # the same image in train and test
    folder = _csv_dataset(tmp_path, rows)
    arr = RNG.integers(1000, 60000, size=(40, 40))
    _png16(folder / "i1.png", arr)                                     # a 16-bit image among 8-bit ones
    report = check_dataset("csv", folder)
    assert report.unreadable == [] and report.missing == []
    assert report.overlap == ["i0.png (train, test)"] and not report.ok
    assert "in 2 splits" in str(report) and "PROBLEMS FOUND" in str(report)
    ds = load_dataset("csv", folder)
    assert split_overlaps(ds) == [("i0.png", ["train", "test"])]
    with pytest.raises(DataError) as err:
        check_split_overlap(ds, where="csv:DS")
    assert str(err.value) == ("csv:DS: image i0.png is listed in two splits (train and test); remove it from one "
                              "split or pass --allow-overlap (recorded)")
    check_split_overlap(ds, allow_overlap=True)                        # accepted when asked for
    assert readable_records(ds.records)[1] == []
    img = decode_image(str(folder / "i1.png"))
    assert img.max() < 255 and np.array_equal(img[:, :, 0], np.round(arr * 255 / 65535).astype(np.uint8))


def test_no_overlap_no_error(tmp_path):
    folder = _csv_dataset(tmp_path, [(f"i{k}.png", k / 10, sp) for k, sp in
                                     enumerate(["train"] * 4 + ["val", "test"])])
    ds = load_dataset("csv", folder)
    assert split_overlaps(ds) == []
    check_split_overlap(ds)
    assert check_dataset("csv", folder).ok


def test_training_refuses_overlap_unless_allowed_and_records_it(tmp_path):
    import json

    from landscape.train.config import resolve_config
    from landscape.train.sweep import run_sweep

    rows = [(f"i{k}.png", k / 10, sp) for k, sp in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2)]
    rows.append(("i0.png", 0.0, "test"))
    folder = _csv_dataset(tmp_path, rows)

    def cfg(**over):
        return resolve_config({}, {"dataset": f"csv:{folder}", "model": "micro", "batch_sizes": [4], "seeds": [0],
                                   "lr_scaling": ["none"], "lr": 1e-3, "reference_batch": 4, "epochs": 1,
                                   "patience": 0, "train_patches": 1, "test_patches": 1, "train_eval_images": 4,
                                   "device": "cpu", **over})
    out = tmp_path / "sweep"
    with pytest.raises(DataError, match=rf"^csv:{folder}: image i0.png is listed in two splits \(train and test\)"):
        run_sweep(cfg(), out, progress=False)
    assert not out.exists()
    res = run_sweep(cfg(allow_overlap=True), out, progress=False)
    assert res[0].status == "finished"
    assert json.loads((out / res[0].name / "config.json").read_text())["allow_overlap"] is True
