"""Real dataset formats, written in their exact on-disk layouts at tiny scale."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import scipy.io
from PIL import Image

from landscape.data import FORMATS, check_dataset, load_dataset, parse_dataset_spec
from landscape.errors import DataError


def _img(path: Path, seed: int, size=(24, 18)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _write_csv(path: Path, header: list[str], rows: list[list], quote=csv.QUOTE_MINIMAL, delimiter=",") -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=quote, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


# ------------------------------------------------------------------ KonIQ-10k

KONIQ_SETS = ["training"] * 7 + ["validation"] * 2 + ["test"] * 3


def _koniq(root: Path, folder="1024x768", sets_file=True) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    names = [f"{1000 + i}.jpg" for i in range(len(KONIQ_SETS))]
    for i, n in enumerate(names):
        _img(root / folder / n, i)
    rng = np.random.default_rng(1)
    mos100 = np.round(rng.uniform(3, 97, len(names)), 4)
    mos5 = np.round(rng.uniform(1.1, 4.9, len(names)), 4)
    z = np.round(rng.uniform(2, 98, len(names)), 4)
    counts = [[3, 20, 50, 20, 7, 100]] * len(names)
    if sets_file:  # the real files quote strings (R write.csv)
        _write_csv(root / "koniq10k_distributions_sets.csv",
                   ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"],
                   [[n, *c, m, 0.7, s] for n, c, m, s in zip(names, counts, mos100, KONIQ_SETS)],
                   quote=csv.QUOTE_NONNUMERIC)
    _write_csv(root / "koniq10k_scores_and_distributions.csv",
               ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"],
               [[n, *c, m, 0.6, zz] for n, c, m, zz in zip(names, counts, mos5, z)],
               quote=csv.QUOTE_NONNUMERIC)
    return names, mos100, mos5, z


def test_koniq_official_split_from_sets_file(tmp_path):
    names, mos100, _, _ = _koniq(tmp_path)
    ds = load_dataset("koniq10k", tmp_path)
    assert ds.split_sizes() == {"train": 7, "val": 2, "test": 3}
    assert ds.score_column == "MOS" and ds.score_range == (0.0, 100.0)
    assert ds.annotation.endswith("koniq10k_distributions_sets.csv")
    assert ds.split_rule.startswith("official") and "set" in ds.split_rule
    assert [Path(r.path).name for r in ds.records] == names
    assert all(Path(r.path).parent.name == "1024x768" and Path(r.path).is_absolute() for r in ds.records)
    np.testing.assert_allclose([r.score for r in ds.records], mos100)
    assert [r.split for r in ds.records] == ["train"] * 7 + ["val"] * 2 + ["test"] * 3
    ident = ds.identity()
    assert ident["score_column"] == "MOS" and ident["split_sizes"]["test"] == 3
    assert ident["annotation"].endswith("koniq10k_distributions_sets.csv")


def test_koniq_zscore_column_keeps_official_split(tmp_path):
    _, _, _, z = _koniq(tmp_path)
    ds = load_dataset("koniq10k", tmp_path, score_column="MOS_zscore")
    assert ds.annotation.endswith("koniq10k_scores_and_distributions.csv")
    np.testing.assert_allclose([r.score for r in ds.records], z)
    assert ds.split_sizes() == {"train": 7, "val": 2, "test": 3}
    # the 1-5 MOS of the scores file, chosen explicitly, has its own declared range
    ds5 = load_dataset("koniq10k", tmp_path, score_column="MOS",
                       annotation="koniq10k_scores_and_distributions.csv")
    assert ds5.score_range == (1.0, 5.0)
    assert ds5.identity()["split_sha256"] != ds.identity()["split_sha256"]  # scores are hashed too


def test_koniq_scores_file_only_seeded_split_and_512_folder(tmp_path):
    _, _, _, z = _koniq(tmp_path, folder="512x384", sets_file=False)
    ds = load_dataset("koniq10k", tmp_path, split_seed=3)
    assert ds.score_column == "MOS_zscore" and ds.score_range == (0.0, 100.0)
    assert ds.split_rule.startswith("seeded") and "seed=3" in ds.split_rule
    assert ds.split_sizes() == {"train": 8, "val": 2, "test": 2}  # round(12*.7)=8, round(12*.8)=10
    assert all(Path(r.path).parent.name == "512x384" for r in ds.records)
    again = load_dataset("koniq10k", tmp_path, split_seed=3)
    assert [r.split for r in again.records] == [r.split for r in ds.records]
    with pytest.raises(DataError, match="no official split"):
        load_dataset("koniq10k", tmp_path, split_mode="official")


def test_koniq_random_mode_ignores_official_split(tmp_path):
    _koniq(tmp_path)
    ds = load_dataset("koniq10k", tmp_path, split_mode="random", split_ratios=(0.8, 0, 0.2))
    assert ds.split_sizes() == {"train": 10, "val": 0, "test": 2}
    assert ds.split_rule.startswith("seeded")


def test_koniq_out_of_range_score_names_file_and_column(tmp_path):
    _koniq(tmp_path)
    p = tmp_path / "koniq10k_scores_and_distributions.csv"
    text = p.read_text().splitlines()
    cells = text[3].split(",")
    cells[7] = "5.5"  # MOS on 1-5
    text[3] = ",".join(cells)
    p.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"koniq10k_scores_and_distributions.csv:4: score 5.5 in column 'MOS'"):
        load_dataset("koniq10k", tmp_path, score_column="MOS", annotation=p.name)


# ------------------------------------------------------------------ KADID-10k

def _kadid(root: Path, n_refs=5, types=2, levels=2) -> list[list]:
    rows = []
    rng = np.random.default_rng(0)
    for r in range(1, n_refs + 1):
        _img(root / "images" / f"I{r:02d}.png", r)
        for t in range(1, types + 1):
            for lv in range(1, levels + 1):
                name = f"I{r:02d}_{t:02d}_{lv:02d}.png"
                _img(root / "images" / name, 100 * r + 10 * t + lv)
                rows.append([name, f"I{r:02d}.png", round(float(rng.uniform(1, 5)), 2), 0.5])
    _write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return rows


def test_kadid_split_by_reference(tmp_path):
    rows = _kadid(tmp_path)
    ds = load_dataset("kadid10k", tmp_path, split_ratios=(0.6, 0.2, 0.2), split_seed=7)
    assert len(ds.records) == 20 and ds.score_range == (1.0, 5.0) and ds.score_column == "dmos"
    assert ds.split_sizes() == {"train": 12, "val": 4, "test": 4}  # 3/1/1 references x 4 images
    split_of = {}
    for r in ds.records:
        assert split_of.setdefault(r.group, r.split) == r.split  # no reference in two splits
    assert set(split_of) == {f"I{i:02d}.png" for i in range(1, 6)}
    np.testing.assert_allclose([r.score for r in ds.records], [row[2] for row in rows])
    assert "reference" in ds.split_rule
    # other seeds give other (still grouped) assignments
    mappings = {tuple(sorted({r.group: r.split for r in load_dataset("kadid10k", tmp_path, split_seed=s).records}
                             .items())) for s in range(6)}
    assert len(mappings) > 1


def test_kadid_missing_column_names_it(tmp_path):
    _kadid(tmp_path, n_refs=1, types=1)
    _write_csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "var"], [["I01_01_01.png", "I01.png", 0.1]])
    with pytest.raises(DataError, match=r"dmos.csv: missing column\(s\) 'dmos'"):
        load_dataset("kadid10k", tmp_path)


def test_missing_image_and_missing_folder(tmp_path):
    _kadid(tmp_path, n_refs=2, types=1)
    (tmp_path / "images" / "I02_01_02.png").unlink()
    with pytest.raises(DataError, match=r"I02_01_02.png: image file not found"):
        load_dataset("kadid10k", tmp_path)
    report = check_dataset("kadid10k", tmp_path)
    assert not report.ok and len(report.missing) == 1 and report.missing[0].endswith("I02_01_02.png")
    with pytest.raises(DataError, match="dataset root not found"):
        load_dataset("kadid10k", tmp_path / "nope")
    with pytest.raises(DataError, match=r"TestImage: image folder not found"):
        load_dataset("spaq", tmp_path)


# ------------------------------------------------------------------ LIVE Challenge

def _livec(root: Path, n=15) -> tuple[list[str], np.ndarray]:
    names = [f"t{i + 1}.bmp" for i in range(7)] + [f"{i + 100}.bmp" for i in range(n - 7)]
    for i, name in enumerate(names):
        folder = root / "Images" / ("trainingImages" if i < 7 else "")
        _img(folder / name, i, size=(20, 20))
    cell = np.empty((n, 1), dtype=object)  # MATLAB 1169x1 cell of strings
    for i, name in enumerate(names):
        cell[i, 0] = np.array([name])
    mos = np.random.default_rng(2).uniform(3.4, 92.4, (1, n))  # MATLAB 1x1169 double
    (root / "Data").mkdir()
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    return names, mos


def test_livec_drops_first_seven(tmp_path):
    names, mos = _livec(tmp_path)
    raw = scipy.io.loadmat(tmp_path / "Data" / "AllImages_release.mat")["AllImages_release"]
    assert raw.shape == (15, 1) and raw[7][0][0] == "100.bmp"  # the layout HyperIQA indexes
    assert scipy.io.loadmat(tmp_path / "Data" / "AllMOS_release.mat")["AllMOS_release"].shape == (1, 15)
    ds = load_dataset("livec", tmp_path, split_seed=1)
    assert len(ds.records) == 8
    assert [Path(r.path).name for r in ds.records] == names[7:]
    np.testing.assert_allclose([r.score for r in ds.records], mos[0, 7:])
    assert sum(ds.split_sizes().values()) == 8 and ds.score_range == (0.0, 100.0)


def test_livec_missing_key(tmp_path):
    _livec(tmp_path)
    scipy.io.savemat(tmp_path / "Data" / "AllMOS_release.mat", {"mos": np.zeros((1, 15))})
    with pytest.raises(DataError, match=r"AllMOS_release.mat: missing key 'AllMOS_release' \(found: mos\)"):
        load_dataset("livec", tmp_path)


# ------------------------------------------------------------------ SPAQ

def _spaq(root: Path, n=10) -> tuple[list[str], list[float]]:
    names = [f"{i + 1:05d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        _img(root / "TestImage" / name, i, size=(40, 30))
    mos = [round(float(x), 2) for x in np.random.default_rng(3).uniform(5, 95, n)]
    (root / "Annotations").mkdir()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    for name, m in zip(names, mos):
        ws.append([name, m, 50.0, 40.0, 45.0, 55.0, 60.0])
    wb.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    return names, mos


def test_spaq_xlsx_and_resize_option(tmp_path):
    names, mos = _spaq(tmp_path)
    ds = load_dataset("spaq", tmp_path, split_seed=0, split_ratios=(0.8, 0.0, 0.2))
    assert [Path(r.path).name for r in ds.records] == names
    np.testing.assert_allclose([r.score for r in ds.records], mos)
    assert ds.split_sizes() == {"train": 8, "val": 0, "test": 2}
    assert ds.resize_short == 512 and ds.identity()["resize_short"] == 512
    assert load_dataset("spaq", tmp_path, resize_short=0).resize_short is None
    assert load_dataset("spaq", tmp_path, resize_short=384).resize_short == 384


def test_spaq_missing_column(tmp_path):
    _spaq(tmp_path, n=2)
    wb = openpyxl.Workbook()
    wb.active.append(["Image name", "Score"])
    wb.active.append(["00001.jpg", 50])
    wb.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    with pytest.raises(DataError, match=r"scores.xlsx: missing column\(s\) 'MOS' \(found: Image name, Score\)"):
        load_dataset("spaq", tmp_path)


# ------------------------------------------------------------------ generic CSV

def test_generic_csv_with_and_without_split(tmp_path):
    for i in range(6):
        _img(tmp_path / "imgs" / f"{i}.png", i)
    rows = [[f"imgs/{i}.png", 10.0 * i, ["train", "val", "test"][i % 3]] for i in range(6)]
    _write_csv(tmp_path / "labels.csv", ["path", "score", "split"], rows)
    ds = load_dataset("csv", tmp_path / "labels.csv")
    assert ds.split_sizes() == {"train": 2, "val": 2, "test": 2} and ds.split_rule.startswith("official")
    assert ds.records[1].path == str((tmp_path / "imgs" / "1.png").resolve())
    assert ds.range_source == "observed" and ds.score_range == (0.0, 50.0)
    # folder root with a single CSV, no split column -> seeded; declared range enforced
    sub = tmp_path / "nosplit"
    sub.mkdir()
    _write_csv(sub / "x.csv", ["path", "score"], [[str(tmp_path / "imgs" / f"{i}.png"), i] for i in range(6)])
    ds2 = load_dataset("csv", sub, score_range=(0, 10))
    assert ds2.split_rule.startswith("seeded") and ds2.range_source == "given"
    with pytest.raises(DataError, match=r"x.csv:7: score 5 .*outside the declared range \[0, 4\]"):
        load_dataset("csv", sub, score_range=(0, 4))
    _write_csv(sub / "x.csv", ["path", "mos"], [["a.png", 1]])
    with pytest.raises(DataError, match=r"x.csv: missing column\(s\) 'score' \(found: path, mos\)"):
        load_dataset("csv", sub)


# ------------------------------------------------------------------ pyiqa meta CSV

def test_pyiqa_split_columns(tmp_path):
    names = [f"{i}.jpg" for i in range(10)]
    for i, n in enumerate(names):
        _img(tmp_path / "images" / n, i)
    official = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    ratio = ["train"] * 8 + ["test"] * 2
    _write_csv(tmp_path / "meta_info_TestDataset.csv",
               ["img_name", "mos", "std", "official_split", "ratio802_seed123_split_01"],
               [[n, 1.0 + i, 0.1, o, r] for i, (n, o, r) in enumerate(zip(names, official, ratio))])
    ds = load_dataset("pyiqa", tmp_path, image_dir="images")
    assert ds.split_sizes() == {"train": 6, "val": 2, "test": 2} and "official_split" in ds.split_rule
    assert ds.score_column == "mos" and [r.score for r in ds.records] == [1.0 + i for i in range(10)]
    ds2 = load_dataset("pyiqa", tmp_path / "meta_info_TestDataset.csv", image_dir="images",
                       pyiqa_split_column="ratio802_seed123_split_01")
    assert ds2.split_sizes() == {"train": 8, "val": 0, "test": 2}
    with pytest.raises(DataError, match=r"missing split column 'ratio802_seed123_split_02' "
                                        r"\(split columns: official_split, ratio802_seed123_split_01\)"):
        load_dataset("pyiqa", tmp_path, image_dir="images", pyiqa_split_column="ratio802_seed123_split_02")


def test_pyiqa_full_reference_tab_separated_groups_by_reference(tmp_path):
    rows = []
    for r in range(1, 5):
        for d in range(1, 4):
            name = f"I{r:02d}_{d:02d}_1.png"
            _img(tmp_path / name, 10 * r + d)
            rows.append([f"I{r:02d}.png", name, 2.0 + 0.1 * d])
    _write_csv(tmp_path / "meta_info_FR.csv", ["ref_name", "dist_name", "dmos"], rows, delimiter="\t")
    ds = load_dataset("pyiqa", tmp_path, split_ratios=(0.5, 0.25, 0.25), score_range=(1, 5))
    assert ds.score_column == "dmos" and len(ds.records) == 12 and ds.range_source == "given"
    assert ds.split_sizes() == {"train": 6, "val": 3, "test": 3}
    groups = {}
    for rec in ds.records:
        assert groups.setdefault(rec.group, rec.split) == rec.split


# ------------------------------------------------------------------ specs and checks

def test_parse_dataset_spec():
    assert parse_dataset_spec("koniq10k:/data/koniq") == ("koniq10k", "/data/koniq")
    assert parse_dataset_spec("csv:C:/x.csv") == ("csv", "C:/x.csv")
    for bad in ("koniq:/x", "koniq10k", "synthetic:"):
        with pytest.raises(DataError, match="synthetic, koniq10k, kadid10k, livec, spaq, csv, pyiqa"):
            parse_dataset_spec(bad)
    assert FORMATS == ("synthetic", "koniq10k", "kadid10k", "livec", "spaq", "csv", "pyiqa")
    with pytest.raises(DataError, match="unknown dataset format 'foo'"):
        load_dataset("foo", ".")


def test_a_format_registered_by_a_user_loads_and_is_listed(tmp_path):
    """The registry is open: a name never seen before loads through load_dataset and the spec."""
    from landscape.data.formats import LOADERS, RawRow, RawTable, register_format

    name = "user_lines_e14"
    assert name not in FORMATS
    for i in range(6):
        _img(tmp_path / f"im{i}.png", i)
    (tmp_path / "labels.txt").write_text("".join(f"im{i}.png {10 * i}\n" for i in range(6)))

    @register_format(name)
    def load_lines(root, opts):
        ann = root / "labels.txt"
        rows = []
        for n, line in enumerate(ann.read_text().splitlines(), start=1):
            file, score = line.split()
            rows.append(RawRow(root / file, float(score), file, None, f"{ann}:{n}"))
        return RawTable(rows, ann, "score", (0.0, 100.0))

    try:
        assert name in FORMATS and FORMATS[-1] == name and len(FORMATS) == 8
        with pytest.raises(ValueError, match="already registered"):
            register_format(name)(lambda root, opts: None)
        ds = load_dataset(name, tmp_path, split_ratios=(0.5, 0.0, 0.5))
        assert ds.format == name and ds.score_range == (0.0, 100.0) and ds.range_source == "declared"
        assert sorted(r.score for r in ds.records) == [0, 10, 20, 30, 40, 50]
        assert ds.split_sizes() == {"train": 3, "val": 0, "test": 3}
        assert parse_dataset_spec(f"{name}:{tmp_path}") == (name, str(tmp_path))
        with pytest.raises(DataError, match=f"valid: .*pyiqa, {name}"):
            load_dataset("nope", tmp_path)
    finally:
        del LOADERS[name]
    assert name not in FORMATS and FORMATS == ("synthetic", "koniq10k", "kadid10k", "livec", "spaq", "csv", "pyiqa")
    with pytest.raises(ValueError, match="without ':'"):
        register_format("a:b")

def test_check_dataset_reports_unreadable(tmp_path):
    _kadid(tmp_path, n_refs=2, types=1)
    (tmp_path / "images" / "I01_01_02.png").write_bytes(b"not a png")
    report = check_dataset("kadid10k", tmp_path)
    assert len(report.unreadable) == 1 and "I01_01_02.png" in report.unreadable[0]
    assert report.n_images == 4 and report.missing == [] and not report.ok
    text = str(report)
    assert "unreadable 1" in text and "I01_01_02.png" in text and "PROBLEMS FOUND" in text
    assert f"min {min(r.score for r in load_dataset('kadid10k', tmp_path).records):.4g}" in text
    json.dumps(load_dataset("kadid10k", tmp_path).identity())  # serialisable
