"""Image decoding and normalisation: a file -> uint8 pixels -> normalised float tensors.

Decoding (:func:`decode_image`): Pillow, RGB; with ``resize_short`` the image is
resized (bicubic; JPEGs first DCT-downscaled with ``draft``) so its shorter side is
``resize_short``; an image whose shorter side is still below ``min_side`` (the patch size)
is resized up (bicubic) so that side equals it. An unreadable or missing file is a
one-line :class:`~landscape.errors.DataError` naming it.

High bit depth (:func:`unit_grey`): Pillow opens 16-bit greyscale PNG/TIFF as mode ``I;16``
(``I;16B``/``I;16L``/``I;16N``) or ``I``, and ``convert("RGB")`` clips every value above 255 to
white. Here such an image is read at its true values scaled to [0, 1] (``v / 65535``; mode
``I`` only when all values lie in 0..65535, else refused), ``F`` (32-bit float) when its values
lie in [0, 1] (else refused), then replicated to three channels. :func:`read_image` returns
that float32 image at full precision; the patch pipeline (:func:`decode_image`) stays 8-bit and
quantises it, ``round(255 v / 65535)`` (error at most 1/510 of the range, as for any 8-bit
image). 16-bit RGB (RGB48) PNGs are opened by Pillow as 8-bit RGB (the high byte of each
sample): true values, 8-bit precision.

Normalisation (:func:`normalize_patches`): uint8 ``(N, S, S, 3)`` -> float32
``(N, 3, S, S)``, ``(x / 255 - mean) / std`` per channel with the ImageNet
``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from landscape.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)


# ---------------------------------------------------------------- decoding

SKIP_HINT = ("pass --skip-bad-images (skip_bad=True) to leave unreadable images out; "
             "'landscape data check' lists them all")


def unreadable(e: DataError) -> DataError:
    """``e`` with :data:`SKIP_HINT` appended (raised where ``skip_bad`` could have skipped the image)."""
    return DataError(f"{e}; {SKIP_HINT}")


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
FULL_16BIT = 65535.0


def unit_grey(im: Image.Image, path: str) -> np.ndarray | None:
    """A high-bit-depth greyscale image as float32 ``(H, W)`` in [0, 1] (module docstring), or
    ``None`` for the other modes (8-bit, palette, RGB(A), ...). Values out of range: :class:`DataError`."""
    if im.mode not in HIGH_DEPTH_MODES:
        return None
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float32)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise DataError(f"{path}: 32-bit float image with values outside [0, 1] (min {np.nanmin(a):g}, "
                            f"max {np.nanmax(a):g}); convert it to 8 or 16 bits")
        return a
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > FULL_16BIT):
        raise DataError(f"{path}: {im.mode} image with values outside 0..65535 (min {a.min()}, max {a.max()}); "
                        f"only 8- and 16-bit images are read")
    return (a / FULL_16BIT).astype(np.float32)


def read_image(path: str) -> np.ndarray:
    """``path`` at full depth: float32 ``(H, W, 3)`` in [0, 1] (8-bit: ``v / 255``; 16-bit:
    ``v / 65535``; no resizing). An unreadable file raises :class:`DataError` naming it."""
    try:
        with Image.open(path) as im:
            grey = unit_grey(im, path)
            if grey is None:
                return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    return np.repeat(grey[:, :, None], 3, axis=2)


def _rgb8(im: Image.Image, path: str) -> Image.Image:
    """``im`` as 8-bit RGB; high bit depths scaled by their true range first (module docstring)."""
    grey = unit_grey(im, path)
    if grey is None:
        return im.convert("RGB")
    return Image.fromarray(np.round(grey * 255.0).astype(np.uint8), "L").convert("RGB")


def decode_image(path: str, *, resize_short: int | None = None, min_side: int = 0) -> np.ndarray:
    """Decode ``path`` to a uint8 ``(H, W, 3)`` array (resizing as in the module docstring;
    16-bit images scaled by 255/65535, not clipped).

    An unreadable or missing file raises :class:`DataError` naming it.
    """
    try:
        with Image.open(path) as im:
            if resize_short:
                w, h = im.size
                scale = resize_short / min(w, h)
                if scale < 1.0 and im.format == "JPEG":
                    im.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
            rgb = _rgb8(im, path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if resize_short and min(rgb.size) != resize_short:
        rgb = _resize_shorter_side(rgb, resize_short)
    if min_side and min(rgb.size) < min_side:
        rgb = _resize_shorter_side(rgb, min_side)
    return np.asarray(rgb, dtype=np.uint8)


def _resize_shorter_side(im: Image.Image, target: int) -> Image.Image:
    """Bicubic resize keeping the aspect ratio so that the shorter side is ``target``."""
    w, h = im.size
    s = target / min(w, h)
    return im.resize((max(target, round(w * s)), max(target, round(h * s))), Image.BICUBIC)


def normalize_patches(patches: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` -> float32 ``(N, 3, S, S)`` normalised with the ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - _MEAN) / _STD
