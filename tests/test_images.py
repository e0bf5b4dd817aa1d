"""images.py: a person's picture -> MNIST-like input; clean per-file errors; fuzzing."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from photos import best_shift_correlation, write_photo
from PIL import Image

from mnist_keras3 import images


def mnist_stats(out):
    """(longest side of the ink's bounding box, centre of mass (row, col)) of a (28, 28[, 1]) image."""
    a = np.asarray(out).reshape(28, 28)
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    r, c = np.mgrid[0:28, 0:28]
    return side, ((a * r).sum() / a.sum(), (a * c).sum() / a.sum())


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the MNIST recipe

def test_output_is_mnist_shaped_float_in_unit_range(mnist):
    (_, _), (x, _) = mnist
    out, inverted = images.to_mnist(x[0])
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0 and not inverted


def test_an_mnist_digit_comes_back_as_itself(mnist):
    """MNIST digits are already normalised: the recipe must leave them (nearly) unchanged."""
    (_, _), (x, _) = mnist
    cors = [best_shift_correlation(images.to_mnist(x[i])[0][..., 0], x[i] / 255.0) for i in range(200)]
    assert np.median(cors) > 0.97 and min(cors) > 0.85, (np.median(cors), min(cors))


def test_polarity_is_decided_by_the_border_and_both_give_the_same_input(mnist):
    (_, _), (x, _) = mnist
    light_on_dark, inv1 = images.to_mnist(x[7])
    dark_on_light, inv2 = images.to_mnist(255 - x[7].astype(np.float32))
    assert (inv1, inv2) == (False, True)
    np.testing.assert_allclose(light_on_dark, dark_on_light, atol=1e-6)


def test_fits_20x20_keeping_aspect_ratio_and_centres_the_mass():
    page = np.full((300, 500), 235, dtype=np.float32)
    page[40:240, 380:430] = 20  # a tall bar, 200 x 50, far off-centre, dark on light
    out, inverted = images.to_mnist(page)
    a = out[..., 0]
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    assert inverted and len(rows) == 20 and len(cols) == 5  # 200:50 -> 20:5
    _, (r, c) = mnist_stats(out)
    assert abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


def test_tiny_digits_are_enlarged_to_the_20_pixel_box(mnist):
    (_, _), (x, _) = mnist
    small = np.asarray(Image.fromarray(x[3]).resize((10, 10), Image.Resampling.BOX))
    side, (r, c) = mnist_stats(images.to_mnist(small)[0])
    assert side == 20 and abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


def test_photo_like_digits_become_their_mnist_originals(mnist, tmp_path):
    (_, _), (x, _) = mnist
    rng = np.random.default_rng(1)
    idx = rng.choice(len(x), 60, replace=False)
    cors = []
    for k, i in enumerate(idx):
        item = images.prepare(write_photo(x[i], tmp_path / f"d{k}", rng, k))
        assert item.inverted and not item.warnings
        side, (r, c) = mnist_stats(item.array)
        assert side == 20 and abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5
        cors.append(best_shift_correlation(item.array[..., 0], x[i] / 255.0))
    # Measured: median 0.976, 5th percentile 0.92 over 300 such digits.
    assert np.median(cors) > 0.93 and min(cors) > 0.75, (np.median(cors), min(cors))


@pytest.fixture(scope="session")
def trained(keras, mnist):
    """The tutorial CNN after one epoch on real MNIST (0.954 test accuracy measured under jax)."""
    from mnist_keras3 import data, models

    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(0)
    model = models.build_model("tutorial")
    # A larger step than the default: one quick epoch of 469 batches gets past 0.95.
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(*data.preprocess(x_train, y_train), batch_size=128, epochs=1, verbose=0)
    return model


@pytest.mark.slow
def test_photo_like_digits_get_their_labels_through_a_trained_model(trained, mnist, tmp_path):
    from mnist_keras3 import data

    (_, _), (x, y) = mnist
    rng = np.random.default_rng(2)
    idx = rng.choice(len(x), 150, replace=False)
    paths = [write_photo(x[i], tmp_path / f"d{k}", rng, k) for k, i in enumerate(idx)]
    photos = np.stack([images.prepare(p).array for p in paths])  # (150, 28, 28, 1)
    original = trained.predict(data.preprocess(x[idx]), verbose=0).argmax(1)
    photo = trained.predict(photos, verbose=0).argmax(1)
    acc_original, acc_photo = (original == y[idx]).mean(), (photo == y[idx]).mean()
    agree = (photo == original).mean()
    # Measured over 5 seeds (jax): originals 0.92-0.95, photos within 0.015 of them, the same
    # answer for 95-97%; torch: 92.7% the same answer. A broken step (no inversion, no
    # centring) drops all of these far below.
    assert acc_original > 0.88
    assert acc_photo >= acc_original - 0.04, (acc_original, acc_photo, agree)
    assert agree > 0.88, (acc_original, acc_photo, agree)


# ---------------------------------------------------------------- what people's files look like

def test_transparent_png_with_black_ink_is_composited_on_white(mnist):
    (_, _), (x, _) = mnist
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = x[0]  # black ink, its opacity is the digit, the rest fully transparent
    item = images.prepare(png_bytes(rgba), "canvas.png")
    assert item.inverted
    np.testing.assert_allclose(item.array, images.to_mnist(255.0 - x[0])[0], atol=2 / 255)


def test_16_bit_grayscale_png(mnist):
    (_, _), (x, _) = mnist
    deep = (x[0].astype(np.uint16) * 257)  # 0..65535
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, "PNG")  # mode I;16
    item = images.prepare(buf.getvalue(), "deep.png")
    np.testing.assert_allclose(item.array, images.to_mnist(x[0])[0], atol=1e-4)


def test_exif_rotation_is_applied(mnist):
    (_, _), (x, _) = mnist
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(x[0]).save(buf, "JPEG", quality=95, exif=exif)
    shown = np.rot90(x[0], k=-1)  # what a viewer displays
    item = images.prepare(buf.getvalue(), "phone.jpg")
    assert best_shift_correlation(item.array[..., 0], images.to_mnist(shown)[0][..., 0]) > 0.95


def test_blank_images_are_a_warning_not_a_crash():
    rng = np.random.default_rng(0)
    for page in (np.full((50, 60), 240, np.uint8),
                 np.clip(240 + rng.normal(0, 3, (80, 80)), 0, 255).astype(np.uint8),
                 np.zeros((1, 1), np.uint8)):
        with pytest.raises(images.BlankImage, match="looks blank"):
            images.prepare(png_bytes(page), "blank.png")


def test_huge_jpeg_is_decoded_at_reduced_scale_with_a_warning(mnist):
    (_, _), (x, _) = mnist
    page = Image.new("L", (10_000, 10_000), 235)
    page.paste(Image.fromarray(255 - x[0]).resize((4000, 4000)), (3000, 3000))
    buf = io.BytesIO()
    page.save(buf, "JPEG", quality=70)
    del page
    item = images.prepare(buf.getvalue(), "huge.jpg")
    assert item.size == (10_000, 10_000) and "reduced scale" in item.warnings[0]
    assert best_shift_correlation(item.array[..., 0], x[0] / 255.0) > 0.9


# ---------------------------------------------------------------- per-file errors

def ihdr_png(width, height):
    """A PNG whose header declares width x height (no real pixel data): a decompression bomb."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def gif_bytes():
    buf = io.BytesIO()
    Image.new("L", (20, 20), 255).save(buf, "GIF")
    return buf.getvalue()


def noise_png():
    return png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))


@pytest.mark.parametrize("name, content, message", [
    ("missing.png", None, "file not found"),
    ("", None, "a folder with no"),
    ("empty.png", b"", "file is empty"),
    ("notes.png", b"a shopping list", "not a PNG, JPEG or BMP"),
    ("anim.gif", gif_bytes(), "not a PNG, JPEG or BMP"),
    ("cut.png", noise_png()[:2000], "damaged or unsupported"),
    ("wide.png", ihdr_png(10_000, 10_000), "too large to decode"),  # 100 MP: over the budget
    ("bomb.png", ihdr_png(100_000, 100_000), "too large to decode"),  # Pillow's own bomb limit
])
def test_per_file_errors_are_one_clean_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(images.ImageError) as info:
        images.prepare(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    assert not isinstance(info.value, images.BlankImage)


def test_expand_lists_a_folders_images_sorted_and_keeps_an_empty_folder(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.bmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    got = images.expand([str(tmp_path), "-", str(tmp_path / "empty")])
    assert got == [str(tmp_path / n) for n in ("a.jpg", "b.PNG", "c.bmp")] + ["-", str(tmp_path / "empty")]


# ---------------------------------------------------------------- fuzzing: only clean errors

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_give_a_result_or_an_image_error(blob):
    try:
        item = images.prepare(blob, "fuzz")
    except images.ImageError as e:
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
    else:
        assert item.array.shape == (28, 28, 1)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 10_000))
def test_damaged_real_images_give_a_result_or_an_image_error(garbage, at):
    real = png_bytes(np.arange(48 * 48, dtype=np.uint8).reshape(48, 48))
    at = at % len(real)
    damaged = real[:at] + garbage + real[at + len(garbage):]
    try:
        item = images.prepare(damaged, "fuzz.png")
    except images.ImageError as e:
        assert "\n" not in str(e)
    else:
        assert item.array.shape == (28, 28, 1) and np.isfinite(item.array).all()


def ink_contrast(page):
    """How far the ink stands out from the paper, counted here from the page itself: the paper is
    the median of the page's outermost ring of pixels (1 pixel wide up to 74 pixels a side); light
    paper means dark ink (contrast = paper - darkest), dark paper means light ink (brightest - paper)."""
    a = np.asarray(page, dtype=np.float64)
    paper = np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]))
    return paper - a.min() if paper > 127.5 else a.max() - paper


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=st.floats(0, 255, width=32)))
def test_random_small_arrays_give_an_mnist_input_or_a_blank_warning(page):
    """Blank exactly when no pixel stands out from the paper by MIN_CONTRAST: a page with ink that
    does must be predicted, so a preprocessor that called every page blank fails here."""
    if ink_contrast(page) < images.MIN_CONTRAST:
        with pytest.raises(images.BlankImage):
            images.to_mnist(page, "fuzz")
        return
    out, _ = images.to_mnist(page, "fuzz")  # BlankImage here is a failure
    assert out.shape == (28, 28, 1) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() == pytest.approx(1.0)
    assert mnist_stats(out)[0] <= 20


def to_mnist_or_blank(page):
    notes = []
    try:
        out, inverted = images.to_mnist(page, "page", notes)
    except images.BlankImage as e:
        return str(e)
    return out, inverted, notes


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)),
       st.integers(0, 255), st.integers(0, 255))
def test_uint8_pages_give_exactly_what_their_float_copy_gives(page, paper, ink):
    """to_mnist's quick way for uint8 pictures (a table of the 256 values, the float work on the
    ink's box only) is the float recipe to the bit: same input, polarity, notes and blank verdict."""
    page = page.copy()
    page[: max(1, len(page) // 2)] = paper  # a plain border part of the time, some ink against it
    page[len(page) // 2:, : page.shape[1] // 2] = ink
    quick, slow = to_mnist_or_blank(page), to_mnist_or_blank(page.astype(np.float32))
    if isinstance(slow, str):
        assert quick == slow
        return
    assert np.array_equal(quick[0], slow[0]) and quick[1:] == slow[1:]


def test_photo_like_files_give_exactly_what_the_float_recipe_gives(mnist, tmp_path):
    """prepare() keeps 8-bit pictures in uint8 up to the ink's box: bit for bit the float32 recipe
    (decode() -> to_mnist of the float array) on the serve tests' photo-like PNG, JPEG and BMP files."""
    (_, _), (x, _) = mnist
    rng = np.random.default_rng(7)
    for i in range(30):
        path = write_photo(x[i], tmp_path / f"photo{i}", rng, i)
        item = images.prepare(path)
        gray, _, _ = images.decode(path.read_bytes())
        assert gray.dtype == np.float32
        array, inverted = images.to_mnist(gray)
        assert np.array_equal(item.array, array) and item.inverted == inverted


@pytest.mark.parametrize("paper, ink, blank", [
    (235, 20, False), (20, 235, False),  # a dark stroke on light paper, a light one on dark paper
    (235, 235 - images.MIN_CONTRAST, False), (20, 20 + images.MIN_CONTRAST, False),  # just enough
    (235, 236 - images.MIN_CONTRAST, True), (20, 19 + images.MIN_CONTRAST, True),  # just too little
])
def test_high_contrast_pages_are_predicted_and_only_faint_ones_are_blank(paper, ink, blank):
    page = np.full((60, 40), paper, np.uint8)
    page[15:45, 18:22] = ink  # a "1", 30 x 4
    if blank:
        with pytest.raises(images.BlankImage, match="looks blank"):
            images.prepare(png_bytes(page), "faint.png")
        return
    item = images.prepare(png_bytes(page), "digit.png")
    side, (r, c) = mnist_stats(item.array)
    assert item.inverted == (paper > 127) and side == 20 and abs(r - 14) <= 0.5 and abs(c - 14) <= 0.5


@pytest.mark.parametrize("bad", [np.zeros((0, 5)), np.zeros((4, 4, 4, 4)), np.full((5, 5), np.nan)])
def test_arrays_that_are_not_images_are_refused(bad):
    with pytest.raises(images.ImageError):
        images.to_mnist(bad, "array")
