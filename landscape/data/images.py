"""Image decoding and normalisation: a file -> uint8 pixels -> normalised float tensors.

Decoding (:func:`decode_image`): Pillow, RGB; with ``resize_short`` the image is
resized (bicubic; JPEGs first DCT-downscaled with ``draft``) so its shorter side is
``resize_short``; an image whose shorter side is still below ``min_side`` (the patch size)
is resized up (bicubic) so that side equals it. An unreadable or missing file is a
one-line :class:`~landscape.errors.DataError` naming it.

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


def decode_image(path: str, *, resize_short: int | None = None, min_side: int = 0) -> np.ndarray:
    """Decode ``path`` to a uint8 ``(H, W, 3)`` array (resizing as in the module docstring).

    An unreadable or missing file raises :class:`DataError` naming it.
    """
    try:
        with Image.open(path) as im:
            if resize_short:
                w, h = im.size
                scale = resize_short / min(w, h)
                if scale < 1.0 and im.format == "JPEG":
                    im.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
            rgb = im.convert("RGB")
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
