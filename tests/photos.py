"""Real MNIST test digits written out the way a person's picture of a digit looks.

Dark ink on light, tinted paper; enlarged 2-8x; off-centre with uneven margins; uneven lighting
and sensor noise; RGB; saved as PNG, JPEG or BMP. The preprocessing must undo all of it.
"""

import numpy as np
from PIL import Image

FORMATS = (("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp"))


def photo_like(digit, rng):
    """uint8 (28, 28) MNIST digit -> uint8 (H, W, 3) photo-like RGB picture of it."""
    scale = int(rng.integers(2, 9))
    side = 28 * scale
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR),
                     dtype=np.float32) / 255.0  # (side, side), 1 = ink
    top, bottom, left, right = (int(m) for m in rng.integers(8, 24 * scale, size=4))
    h, w = side + top + bottom, side + left + right
    paper = float(rng.uniform(175, 245))
    rows = np.linspace(0, 1, h)[:, None]
    light = 1.0 + rng.uniform(-0.08, 0.08) * (rows - 0.5)  # (h, 1): a lighting gradient
    page = np.full((h, w), paper, dtype=np.float32) * light
    pen = float(rng.uniform(10, 70))  # darkness of the pen, on a 0..255 scale
    region = page[top:top + side, left:left + side]
    page[top:top + side, left:left + side] = region * (1 - ink) + pen * ink
    page += rng.normal(0, 3, size=page.shape)
    tint = rng.uniform(0.9, 1.0, size=3)
    return np.clip(page[..., None] * tint, 0, 255).astype(np.uint8)  # (h, w, 3)


def write_photo(digit, path_stem, rng, fmt_index):
    """Write photo_like(digit) as PNG, JPEG or BMP (by fmt_index); return the path."""
    fmt, suffix = FORMATS[fmt_index % len(FORMATS)]
    path = path_stem.with_suffix(suffix)
    Image.fromarray(photo_like(digit, rng)).save(path, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return path


def best_shift_correlation(a, b, shift=1):
    """Largest correlation of a with b moved by up to `shift` pixels: a one-pixel offset in
    centring is invisible to a CNN but drops the plain correlation of thin strokes a lot."""
    best = -1.0
    for dr in range(-shift, shift + 1):
        for dc in range(-shift, shift + 1):
            moved = np.roll(np.roll(b, dr, axis=0), dc, axis=1)
            best = max(best, float(np.corrcoef(a.ravel(), moved.ravel())[0, 1]))
    return best
