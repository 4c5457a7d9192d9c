"""Embedded synthetic IQA dataset: dead-leaves references, four or five distortions,
a documented content-dependent quality score. Offline and deterministic in ``seed``.

References (``size`` px, rendered at 2x and box-downsampled): a dead-leaves model —
occluding discs, ellipses and rectangles with power-law radii (``p(r) ~ r^-3``), each
filled with a colour, a linear shading gradient and, with a probability that grows
with the image's "busyness" ``b ~ U(0, 1)``, a texture (sinusoidal grating or smooth
noise), over a two-colour gradient background, times a smooth illumination field.
Busy references have many small textured leaves, calm ones few large flat leaves.

Distortions (level 1 = mildest .. 5), applied to the 8-bit reference:
- ``blur``: Gaussian blur, sigma (px) = 0.5, 0.9, 1.4, 2.0, 3.0
- ``noise``: additive Gaussian noise, sigma (on [0, 1]) = 0.012, 0.025, 0.045, 0.07, 0.10
- ``jpeg``: Pillow JPEG, quality = 75, 50, 30, 18, 8
- ``contrast``: ``m + k (x - m)`` with ``m`` the mean luminance, k = 0.9, 0.78, 0.64, 0.5, 0.36
- ``color`` (optional): desaturation ``Y + s (x - Y)``, s = 0.7, 0.5, 0.32, 0.16, 0, plus a
  warm cast of 0.015, 0.03, 0.045, 0.06, 0.075 on R (+) and B (-)
The reference itself is included with ``distortion="none"``, ``level=0``.

Quality score (0-100, higher is better), computed from the saved 8-bit files
(values in [0, 1]), a masked-error model:
- luminance ``Y = 0.299 R + 0.587 G + 0.114 B``, chroma ``Cb = B - Y``, ``Cr = R - Y``;
- local contrast of the reference ``c = sqrt(G_s * Y^2 - (G_s * Y)^2)``, ``G_s`` a Gaussian
  window with sigma 1.5 px;
- visibility ``v_Y = (Y_d - Y_r) / (C0 + c)``, ``v_C = |C_d - C_r| / (C0_C + c)``
  with ``C0 = 0.04``, ``C0_C = 0.08`` (divisive masking: noise is less visible on busy
  texture; blur removes detail, so it is more visible on detailed content);
- distortion ``D = sqrt(mean(v_Y^2) + W_C mean(v_C^2))``, ``W_C = 0.5``;
- score ``Q = 100 / (1 + (D / D50)^GAMMA)``, ``D50 = 0.55``, ``GAMMA = 1.3``
  (optionally plus seeded Gaussian "rater" noise of std ``score_noise``, clipped to [0, 100]).

Split: references are split train/val/test (seeded, ratios 0.7/0.1/0.2) and every
image of a reference follows it. Output: ``images/*.png``, ``scores.csv`` (``path,score,
split,reference,distortion,level,param,busyness``), ``meta.json`` and ``README.txt``.
"""
from __future__ import annotations

import colorsys
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from landscape.data.splits import check_ratios, seeded_group_split
from landscape.errors import DataError
from landscape.store import atomic_path, write_json

GENERATOR_VERSION = 1
LEVELS = {
    "blur": (0.5, 0.9, 1.4, 2.0, 3.0),
    "noise": (0.012, 0.025, 0.045, 0.07, 0.10),
    "jpeg": (75, 50, 30, 18, 8),
    "contrast": (0.9, 0.78, 0.64, 0.5, 0.36),
    "color": (0.7, 0.5, 0.32, 0.16, 0.0),
}
COLOR_CAST = (0.015, 0.03, 0.045, 0.06, 0.075)
DEFAULT_DISTORTIONS = ("blur", "noise", "jpeg", "contrast")
MASK_SIGMA = 1.5
C0, C0_C, W_C = 0.04, 0.08, 0.5
D50, GAMMA = 0.55, 1.3
CSV_COLUMNS = ("path", "score", "split", "reference", "distortion", "level", "param", "busyness")


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings (all recorded in ``meta.json``)."""

    seed: int = 0
    n_references: int = 48
    size: int = 96
    distortions: tuple[str, ...] = DEFAULT_DISTORTIONS
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    score_noise: float = 0.0
    include_references: bool = True


# ---------------------------------------------------------------- references

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _colour(rng: np.random.Generator, hues: np.ndarray) -> np.ndarray:
    """A leaf colour near one of the image's palette hues (natural images have coherent palettes)."""
    h = (hues[rng.integers(len(hues))] + 0.06 * rng.standard_normal()) % 1.0
    s, v = rng.uniform(0.05, 0.65), rng.uniform(0.15, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def dead_leaves(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """One reference image (uint8 HxWx3) and its busyness ``b`` in [0, 1]."""
    n = 2 * size
    b = float(rng.random())
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    # background: gradient between two colours
    theta = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(theta) + yy * np.sin(theta)) / n + 1.0) / 2.0
    hues = rng.random(int(rng.integers(2, 4)))
    c1, c2 = _colour(rng, hues), _colour(rng, hues)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    fine, coarse = _smooth_noise(rng, (n, n), 1.2), _smooth_noise(rng, (n, n), 4.0)

    rmin = n * (0.015 + 0.04 * (1 - b))
    rmax = n * (0.12 + 0.35 * (1 - b))
    n_leaves = int(40 + 360 * b)
    p_texture = 0.1 + 0.75 * b
    a = 1.0 - 3.0  # power-law exponent 3: inverse-CDF sampling
    for _ in range(n_leaves):
        r = (rmin ** a + rng.random() * (rmax ** a - rmin ** a)) ** (1 / a)
        cx, cy = rng.uniform(-r, n + r), rng.uniform(-r, n + r)
        x0, x1 = int(max(0, np.floor(cx - 1.5 * r))), int(min(n, np.ceil(cx + 1.5 * r) + 1))
        y0, y1 = int(max(0, np.floor(cy - 1.5 * r))), int(min(n, np.ceil(cy + 1.5 * r) + 1))
        kind, phi = rng.random(), rng.uniform(0, np.pi)
        aspect = rng.uniform(0.4, 1.0)
        shade_dir, shade_amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.45)
        colour = _colour(rng, hues)
        tex_kind, tex_amp = rng.random(), rng.uniform(0.1, 0.45)
        freq, tex_dir, tex_phase = rng.uniform(0.06, 0.35), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        textured = rng.random() < p_texture
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        u = dx * np.cos(phi) + dy * np.sin(phi)
        v = -dx * np.sin(phi) + dy * np.cos(phi)
        if kind < 0.5:
            mask = dx ** 2 + dy ** 2 <= r ** 2
        elif kind < 0.8:
            mask = (u / r) ** 2 + (v / (aspect * r)) ** 2 <= 1.0
        else:
            mask = (np.abs(u) <= r) & (np.abs(v) <= aspect * r)
        if not mask.any():
            continue
        shade = 1.0 + shade_amp * (dx * np.cos(shade_dir) + dy * np.sin(shade_dir)) / max(r, 1.0)
        if textured:
            if tex_kind < 0.5:
                w = np.cos(tex_dir) * dx + np.sin(tex_dir) * dy
                shade = shade * (1.0 + tex_amp * np.sin(2 * np.pi * freq * w + tex_phase))
            else:
                src = fine if tex_kind < 0.8 else coarse
                shade = shade * (1.0 + 0.6 * tex_amp * src[y0:y1, x0:x1])
        patch = colour * shade[..., None]
        region = img[y0:y1, x0:x1]
        region[mask] = patch[mask]
    light = np.clip(0.85 + 0.15 * _smooth_noise(rng, (n, n), n / 6.0), 0.5, 1.15)
    img = np.clip(img * light[..., None], 0.0, 1.0)
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return np.round(img * 255.0).astype(np.uint8), b


# ---------------------------------------------------------------- distortions

def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _luma(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def distort(ref: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion ``kind`` at ``level`` (1..5) to a uint8 image; returns uint8."""
    p = LEVELS[kind][level - 1]
    x = ref.astype(np.float64) / 255.0
    if kind == "blur":
        return _to_u8(ndimage.gaussian_filter(x, sigma=(p, p, 0), mode="reflect"))
    if kind == "noise":
        return _to_u8(x + rng.standard_normal(x.shape) * p)
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(ref).save(buf, format="JPEG", quality=int(p))
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB")).copy()
    if kind == "contrast":
        m = _luma(x).mean()
        return _to_u8(m + p * (x - m))
    if kind == "color":
        y = _luma(x)[..., None]
        cast = COLOR_CAST[level - 1] * np.array([1.0, 0.0, -1.0])
        return _to_u8(y + p * (x - y) + cast)
    raise DataError(f"unknown synthetic distortion '{kind}' (valid: {', '.join(LEVELS)})")


# ---------------------------------------------------------------- score

def distortion_index(ref: np.ndarray, dist: np.ndarray) -> float:
    """Masked distortion ``D`` of ``dist`` against ``ref`` (uint8 images; module docstring)."""
    r = ref.astype(np.float64) / 255.0
    d = dist.astype(np.float64) / 255.0
    yr, yd = _luma(r), _luma(d)
    mu = ndimage.gaussian_filter(yr, MASK_SIGMA, mode="reflect")
    var = ndimage.gaussian_filter(yr * yr, MASK_SIGMA, mode="reflect") - mu * mu
    c = np.sqrt(np.maximum(var, 0.0))
    v_y = (yd - yr) / (C0 + c)
    cb = (d[..., 2] - yd) - (r[..., 2] - yr)
    cr = (d[..., 0] - yd) - (r[..., 0] - yr)
    v_c = np.sqrt(cb * cb + cr * cr) / (C0_C + c)
    return float(np.sqrt(np.mean(v_y ** 2) + W_C * np.mean(v_c ** 2)))


def quality_score(ref: np.ndarray, dist: np.ndarray) -> float:
    """``Q = 100 / (1 + (D / D50)^GAMMA)`` in [0, 100]; 100 for an identical image."""
    dval = distortion_index(ref, dist)
    return 100.0 / (1.0 + (dval / D50) ** GAMMA)


# ---------------------------------------------------------------- writer

def _readme(cfg: SynthConfig, counts: dict[str, int]) -> str:
    doc = (__doc__ or "").strip()
    return (f"landscape synthetic IQA dataset (generator v{GENERATOR_VERSION})\n"
            f"settings: {json.dumps(asdict(cfg), sort_keys=True)}\n"
            f"images per split: {json.dumps(counts, sort_keys=True)}\n\n{doc}\n")


def generate_synthetic(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_references: int = 48,
    size: int = 96,
    distortions: Sequence[str] = DEFAULT_DISTORTIONS,
    split_ratios: Sequence[float] = (0.7, 0.1, 0.2),
    score_noise: float = 0.0,
    include_references: bool = True,
) -> Path:
    """Write the synthetic dataset into ``out_dir`` and return its path.

    Same arguments -> byte-identical files (on the same numpy/scipy/Pillow versions).
    ``scores.csv`` is removed first and written last, so an interrupted run leaves no
    loadable half-dataset. Default: 48 references x (1 + 4 types x 5 levels) = 1008 images.
    """
    bad = [d for d in distortions if d not in LEVELS]
    if bad:
        raise DataError(f"unknown synthetic distortion '{bad[0]}' (valid: {', '.join(LEVELS)})")
    if n_references < 1 or size < 8:
        raise DataError(f"synthetic: need n_references >= 1 and size >= 8 (got {n_references}, {size})")
    if not (score_noise >= 0):
        raise DataError(f"synthetic: score_noise must be >= 0 (got {score_noise})")
    cfg = SynthConfig(seed=int(seed), n_references=int(n_references), size=int(size),
                      distortions=tuple(distortions), split_ratios=check_ratios(split_ratios),
                      score_noise=float(score_noise), include_references=bool(include_references))
    out = Path(out_dir).expanduser()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "scores.csv").unlink(missing_ok=True)

    refs = [f"ref{i:03d}" for i in range(cfg.n_references)]
    split_of = seeded_group_split(refs, cfg.seed, cfg.split_ratios)
    lines = [",".join(CSV_COLUMNS)]
    for i, ref_id in enumerate(refs):
        ref, busy = dead_leaves(np.random.default_rng([cfg.seed, i, 0]), cfg.size)
        items = [("none", 0, 0, 0.0, ref)] if cfg.include_references else []
        for k, kind in enumerate(LEVELS):
            if kind not in cfg.distortions:
                continue
            for level in range(1, 6):
                rng = np.random.default_rng([cfg.seed, i, 1 + k, level])
                items.append((kind, k, level, float(LEVELS[kind][level - 1]), distort(ref, kind, level, rng)))
        for kind, k, level, param, img in items:
            rel = f"images/{ref_id}.png" if kind == "none" else f"images/{ref_id}_{kind}{level}.png"
            Image.fromarray(img).save(out / rel, format="PNG")
            q = quality_score(ref, img)
            if cfg.score_noise > 0 and kind != "none":
                noise_rng = np.random.default_rng([cfg.seed, i, 1 + k, level, 1])
                q = float(np.clip(q + cfg.score_noise * noise_rng.standard_normal(), 0.0, 100.0))
            lines.append(f"{rel},{q:.4f},{split_of[ref_id]},{ref_id},{kind},{level},{param:g},{busy:.4f}")

    counts = {s: 0 for s in ("train", "val", "test")}
    for line in lines[1:]:
        counts[line.split(",")[2]] += 1
    meta = {
        "generator": "landscape.data.synthetic", "generator_version": GENERATOR_VERSION,
        "config": asdict(cfg), "score_range": [0.0, 100.0], "higher_is_better": True,
        "score_formula": "Q = 100 / (1 + (D / D50)^GAMMA), D = sqrt(mean(v_Y^2) + W_C mean(v_C^2)), "
                         "v_Y = dY / (C0 + c), v_C = |dC| / (C0_C + c), c = local std of reference "
                         "luminance (Gaussian sigma MASK_SIGMA)",
        "constants": {"D50": D50, "GAMMA": GAMMA, "C0": C0, "C0_C": C0_C, "W_C": W_C, "MASK_SIGMA": MASK_SIGMA},
        "levels": {k: list(LEVELS[k]) for k in cfg.distortions},
        "images": len(lines) - 1, "split_sizes": counts,
    }
    write_json(out / "meta.json", meta)
    with atomic_path(out / "README.txt") as tmp:
        tmp.write_text(_readme(cfg, counts))
    with atomic_path(out / "scores.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out


def ensure_synthetic(out_dir: str | Path, **kwargs) -> Path:
    """Generate the dataset unless ``out_dir`` already holds one made with the same settings."""
    out = Path(out_dir).expanduser()
    meta = out / "meta.json"
    if (out / "scores.csv").is_file() and meta.is_file():
        try:
            stored = json.loads(meta.read_text())["config"]
        except (OSError, ValueError, KeyError):
            stored = None
        probe = SynthConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()})
        want = json.loads(json.dumps(asdict(probe)))
        want["split_ratios"] = list(check_ratios(want["split_ratios"]))
        if stored == want:
            return out
    return generate_synthetic(out, **kwargs)
