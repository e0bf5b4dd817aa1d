"""Turn an image a person has (a photo, a scan, a drawing) into an MNIST-like input.

MNIST itself was made this way: each digit was size-normalised to fit a 20x20 box keeping its
aspect ratio (anti-aliased, hence grey levels), then placed in a 28x28 field so that its centre of
mass sits at the centre. MNIST digits are light ink on black. So, per image:

    decode (PNG/JPEG/BMP; EXIF rotation applied; transparency composited on white paper)
    -> grayscale -> dark ink on light paper is inverted (decided by the border's brightness)
    -> paper level subtracted, contrast stretched -> cropped to the ink's bounding box
    -> scaled to fit 20x20 keeping the aspect ratio -> centred by centre of mass in 28x28
    -> float32 (28, 28, 1) in [0, 1], like data.preprocess gives for MNIST.

Measured on the 10,000 MNIST test digits: 9,997 have a 20-pixel bounding box (longest side) and
their centre of mass averages (13.99, 14.01) in (row, column) pixel indices, spread 0.29, which is
what integer shifts towards (14, 14) give: that is the target used here.

That is for digit models (a record's preprocessing "mnist-digit", records.py). Every other model
gets "resize": the decoded picture, converted to the model's channels (grayscale or RGB), resized
to its input size, in [0, 1] as data.preprocess gives (to_model_input).

Pillow and numpy only (no keras), so the prediction CLI and a web server share it. Every problem
with one image is an ImageError (BlankImage for an image with no ink), never a Pillow traceback.
"""

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import MnistKeras3Error

FORMATS = ("PNG", "JPEG", "BMP")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_FILE_BYTES = 50 * 1024 * 1024  # no digit picture needs more
# Decoded at full size up to this (a 40 MP photo); beyond: JPEG at reduced scale, others refused.
MAX_PIXELS = 40_000_000
WORK_SIDE = 2048  # larger images are shrunk to this longest side before the (float) processing
BOX_SIDE = 20  # MNIST's size-normalisation box
FIELD = 28
CENTRE = 14.0  # target centre of mass (row and column index), measured on MNIST (see above)
MIN_CONTRAST = 24.0  # of 255: less between paper and darkest ink is a blank image
INK_FLOOR = 0.2  # ink fainter than this fraction of the darkest stroke is paper texture or noise


class ImageError(MnistKeras3Error):
    """One image could not be used; the message names the file and says why."""


class BlankImage(ImageError):
    """The image decoded fine but holds no ink: a warning, not a failure."""


@dataclasses.dataclass
class Prepared:
    name: str
    array: np.ndarray  # float32 (28, 28, 1) in [0, 1]
    size: tuple  # the image's (width, height) as stored in the file
    inverted: bool  # True: dark ink on light paper was inverted to MNIST's light on dark
    warnings: list
    preprocessing: str = "mnist-digit"  # or "resize" (records.py)


def read_bytes(source, name=None):
    """Bytes of `source` (a path, bytes, or a binary file object); ImageError on any problem."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.exists():
            raise ImageError(f"{name}: file not found. Check the path.")
        if path.is_dir():
            raise ImageError(f"{name}: a folder with no {'/'.join(SUFFIXES)} files in it.")
        if not path.is_file():
            raise ImageError(f"{name}: not a regular file. Pass image files, or a folder of them.")
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ImageError(f"{name}: {path.stat().st_size:,} bytes is too large for a digit picture "
                                 f"(limit {MAX_FILE_BYTES:,}). Shrink it first.")
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{name}: cannot be read ({e.strerror or e}).") from e
    name = name or "<image>"
    if not data:
        raise ImageError(f"{name}: the file is empty. Pass a PNG, JPEG or BMP image.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: more than {MAX_FILE_BYTES:,} bytes is too large for a digit picture. "
                         "Shrink it first.")
    return data


def decode(data, name="<image>", channels=1):
    """PNG/JPEG/BMP bytes -> (float32 array in [0, 255], original (w, h), warnings): grayscale (H, W),
    or (H, W, 3) RGB when channels is 3."""
    pixels, size, notes = _decode(data, name, channels)
    return np.asarray(pixels, dtype=np.float32), size, notes


def _decode(data, name="<image>", channels=1):
    """decode(), except that a plain 8-bit grayscale result stays uint8 (H, W), the values the float32
    array would hold: to_mnist works on it without a float copy of the whole picture."""
    draft = "L" if channels == 1 else "RGB"
    notes = []
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; the size is
        # checked against this module's own budget below, before anything is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=FORMATS)
        size = im.size
        pixels = size[0] * size[1]
        if pixels > MAX_PIXELS:
            if im.format != "JPEG":
                raise ImageError(f"{name}: {size[0]}x{size[1]} pixels is too large to decode safely "
                                 f"(limit {MAX_PIXELS:,} pixels for {im.format}). Shrink it first.")
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly, without the full-size bitmap.
            im.draft(draft, (size[0] // 8 + 1, size[1] // 8 + 1))
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise ImageError(f"{name}: {size[0]}x{size[1]} pixels is too large even at 1/8 scale. Shrink it first.")
            notes.append(f"{name}: {size[0]}x{size[1]} pixels is over {MAX_PIXELS:,}; "
                         f"decoded at reduced scale ({im.size[0]}x{im.size[1]})")
        elif max(size) > 2 * WORK_SIDE and im.format == "JPEG":
            im.draft(draft, (WORK_SIDE, WORK_SIDE))  # a routine big photo: no need for every pixel
        im.load()
        try:
            # Phone photos are stored sideways with a rotation tag. In place: no copy when there is none.
            ImageOps.exif_transpose(im, in_place=True)
        except Exception:  # a damaged EXIF block: the pixels are still fine
            notes.append(f"{name}: unreadable EXIF orientation ignored")
        gray = _grayscale(im, keep_uint8=True) if channels == 1 else _rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # over twice Pillow's limit: refused at open
        raise ImageError(f"{name}: too large to decode safely ({str(e).split(',')[0]}). Shrink it first.") from e
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"{name}: not a PNG, JPEG or BMP image. Pass one of those.") from err
    except Exception as e:  # Pillow's decoders raise many types on malformed files
        raise ImageError(f"{name}: the image is damaged or unsupported ({type(e).__name__}: {str(e)[:100]}).") from e
    if max(gray.shape[:2]) > WORK_SIDE:
        gray = _resize_channels(gray.astype(np.float32), WORK_SIDE / max(gray.shape[:2]))
    return gray, size, notes


def _rgb(im):
    """Any Pillow mode -> float32 (H, W, 3) in [0, 255]; transparent parts count as white."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return np.repeat(_grayscale(im)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        return rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.asarray(im.convert("RGB"), dtype=np.float32)


def _resize_channels(a, scale=None, size=None):
    """_resize of a (H, W) or (H, W, C) array, channel by channel, by `scale` or to size (h, w)."""
    if a.ndim == 2:
        return _resize(a, scale, size)
    return np.stack([_resize(a[..., c], scale, size) for c in range(a.shape[2])], axis=2)


def to_model_input(pixels, shape):
    """"resize" preprocessing: float (H, W) or (H, W, 3) in [0, 255] -> float32 `shape` (h, w, c) in
    [0, 1]: colour converted (ITU-R 601 luma, as Pillow's "L", or gray copied to RGB), then resized."""
    a = np.asarray(pixels, dtype=np.float32)
    h, w, c = (int(d) for d in shape)
    if c == 1 and a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif c == 3 and a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = _resize_channels(a, size=(h, w))
    return (np.clip(a, 0.0, 255.0) / 255.0).reshape(h, w, c).astype(np.float32)


def _grayscale(im, keep_uint8=False):
    """Any Pillow mode -> float32 (H, W) in [0, 255]; transparent parts count as white paper.
    keep_uint8: 8-bit grayscale and RGB images give uint8 (H, W) instead, the same values."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):  # 16-bit and float images
        a = np.asarray(im, dtype=np.float32)
        if im.mode.startswith("I") and a.size and a.max() > 255:
            a = a * (255.0 / 65535.0)
        return np.clip(a, 0, 255)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0
        gray = np.asarray(rgba.convert("L"), dtype=np.float32)
        return gray * alpha + 255.0 * (1.0 - alpha)  # composite on white paper
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, 1, P ... through RGB
    if im.mode == "RGB":
        im = im.convert("L")  # ITU-R 601 luma, rounded to 8 bits, in Pillow's C: before any numpy work
    return np.asarray(im) if keep_uint8 else np.asarray(im, dtype=np.float32)


def _resize(a, scale, size=None):
    """Resize a float (H, W) array by `scale` (or to size (h, w)): area-averaging when shrinking
    (anti-aliased, as MNIST's normalisation was), bilinear when enlarging."""
    h, w = a.shape
    nh, nw = size if size else (max(1, round(h * scale)), max(1, round(w * scale)))
    scale = min(nh / h, nw / w)
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((nw, nh), method), dtype=np.float32)


def to_mnist(gray, name="<image>", notes=None):
    """Grayscale (H, W) array, values in [0, 255], either polarity -> (float32 (28, 28, 1), inverted).

    Raises BlankImage when there is no ink to find.
    """
    if isinstance(gray, np.ndarray) and gray.dtype == np.uint8 and gray.ndim == 2 and gray.size:
        return _to_mnist_uint8(gray, name, notes)
    a = np.asarray(gray, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ImageError(f"{name}: expected a 2-D grayscale image. Received: shape={a.shape}")
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: the image holds NaN or infinite values.")
    h, w = a.shape
    b = max(1, round(0.02 * min(h, w)))  # a thin ring at the edge: the paper, not the digit
    border = np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])
    paper = float(np.median(border))
    inverted = paper > 127.5  # light paper: dark ink, the opposite of MNIST
    if inverted:
        a, paper = 255.0 - a, 255.0 - paper
    contrast = float(a.max()) - paper
    if contrast < MIN_CONTRAST:
        raise BlankImage(f"{name}: looks blank (ink differs from the paper by {max(contrast, 0):.0f}/255); "
                         "not predicted.")
    ink = np.clip((a - paper) / contrast, 0.0, 1.0)  # 0 = paper, 1 = the darkest stroke
    ink[ink < INK_FLOOR] = 0.0
    if notes is not None and np.count_nonzero(ink) > 0.5 * ink.size:
        notes.append(f"{name}: ink covers most of the image; expected one digit on plain paper")

    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w): the ink's bounding box
    return _fit(ink), inverted


def _to_mnist_uint8(a8, name, notes):
    """to_mnist of a uint8 (H, W) array, with the same result as on its float32 copy: the float
    steps are exact per value, so they are done once for each of the 256 values (a table), the
    ink's bounding box is found on the uint8 pixels, and only the box is turned into floats."""
    h, w = a8.shape
    b = max(1, round(0.02 * min(h, w)))
    border = np.concatenate([a8[:b].ravel(), a8[-b:].ravel(), a8[:, :b].ravel(), a8[:, -b:].ravel()])
    paper = _median_uint8(border)
    inverted = paper > 127.5
    levels = np.arange(256, dtype=np.float32)
    if inverted:
        levels, paper = 255.0 - levels, 255.0 - paper
        contrast = float(255 - int(a8.min())) - paper
    else:
        contrast = float(a8.max()) - paper
    if contrast < MIN_CONTRAST:
        raise BlankImage(f"{name}: looks blank (ink differs from the paper by {max(contrast, 0):.0f}/255); "
                         "not predicted.")
    table = np.clip((levels - paper) / contrast, 0.0, 1.0)  # the ink of each pixel value, as to_mnist's
    table[table < INK_FLOOR] = 0.0
    kept = np.flatnonzero(table)  # the values that are ink: one run, at the dark or the light end
    low, high = int(kept[0]), int(kept[-1])
    if high - low + 1 != len(kept):  # not one run after all (never seen): look every pixel up
        mask = table[a8] > 0
    elif low == 0:
        mask = a8 <= high
    else:
        mask = a8 >= low if high == 255 else (a8 >= low) & (a8 <= high)
    if notes is not None and np.count_nonzero(mask) > 0.5 * mask.size:
        notes.append(f"{name}: ink covers most of the image; expected one digit on plain paper")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ink = np.take(table, a8[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])  # float32 (h, w): the ink's box
    return _fit(ink), inverted


def _median_uint8(values):
    """np.median of uint8 values, from their histogram (a sort of thousands of border pixels is not
    needed): the middle value, or the mean of the two middle ones, as a float."""
    counts = np.cumsum(np.bincount(values, minlength=256))
    n = int(counts[-1])
    low = int(np.searchsorted(counts, (n - 1) // 2, side="right"))  # the value at sorted index (n-1)//2
    high = int(np.searchsorted(counts, n // 2, side="right"))  # ... at n//2
    return (low + high) / 2


def _fit(ink):
    """float32 (h, w) ink in [0, 1], cropped to its bounding box -> float32 (28, 28, 1): scaled to fit
    20x20 keeping the aspect ratio, centred by centre of mass in 28x28."""
    box = _resize(ink, BOX_SIDE / max(ink.shape))  # (<=20, <=20), longest side 20
    box = np.clip(box, 0.0, 1.0)
    # Shrinking averages thin strokes towards grey; MNIST strokes peak at full intensity.
    box /= box.max()

    bh, bw = box.shape
    total = box.sum()
    com_r = (box.sum(axis=1) * np.arange(bh)).sum() / total
    com_c = (box.sum(axis=0) * np.arange(bw)).sum() / total
    top = int(np.clip(round(CENTRE - com_r), 0, FIELD - bh))
    left = int(np.clip(round(CENTRE - com_c), 0, FIELD - bw))
    out = np.zeros((FIELD, FIELD), dtype=np.float32)
    out[top:top + bh, left:left + bw] = box
    return out[..., None]  # (28, 28, 1)


def prepare(source, name=None, record=None):
    """A path, bytes or binary file object -> Prepared; ImageError (or BlankImage) on a problem.
    `record` (records.py) chooses the preprocessing; none, or "mnist-digit", is MNIST's."""
    if name is None:
        name = str(source) if isinstance(source, (str, Path)) else "<image>"
    data = read_bytes(source, name)
    if record is not None and record.get("preprocessing") != "mnist-digit":
        shape = record["input_shape"]
        pixels, size, notes = decode(data, name, channels=shape[-1])
        return Prepared(name=name, array=to_model_input(pixels, shape), size=size, inverted=False,
                        warnings=notes, preprocessing="resize")
    gray, size, notes = _decode(data, name)  # uint8 for most pictures: to_mnist's quick way
    array, inverted = to_mnist(gray, name, notes)
    return Prepared(name=name, array=array, size=size, inverted=inverted, warnings=notes)


def expand(paths):
    """Command-line arguments -> image sources: a folder becomes its image files (sorted, not
    recursive; kept as is when it has none, so that it gets its own error); "-" (stdin) stays."""
    out = []
    for p in paths:
        found = []
        if p != "-" and Path(p).is_dir():
            found = sorted(str(f) for f in Path(p).iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
        out.extend(found or [p])
    return out
