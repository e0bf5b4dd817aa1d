"""plots.py: PNGs that decode, and that show what they claim (checked by their pixels).

The pictures themselves were also looked at by eye (see the README); these tests catch a blank or
mislabelled figure, a missing line, a wrong colour for a wrong prediction.
"""

import numpy as np
from PIL import Image

from mnist_keras3 import plots

BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # matplotlib's first two line colours
RED = tuple(int(plots.BAD[i:i + 2], 16) for i in (1, 3, 5))
GREEN = tuple(int(plots.GOOD[i:i + 2], 16) for i in (1, 3, 5))


def pixels(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def has_colour(rgb, colour, tol=80, at_least=10):
    close = (np.abs(rgb.astype(int) - colour).sum(axis=2) < tol).sum()
    return close >= at_least


def test_curves_show_training_and_validation_lines(tmp_path):
    history = {"loss": [0.9, 0.5, 0.4], "accuracy": [0.7, 0.85, 0.9],
               "val_loss": [0.6, 0.45, 0.41], "val_accuracy": [0.8, 0.86, 0.88]}
    rgb = pixels(plots.curves(history, tmp_path / "curves.png", title="run"))
    assert rgb.shape[1] > rgb.shape[0] > 200  # two panels side by side
    left, right = rgb[:, : rgb.shape[1] // 2], rgb[:, rgb.shape[1] // 2:]
    for panel in (left, right):
        assert has_colour(panel, BLUE) and has_colour(panel, ORANGE)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind


def test_curves_without_validation_have_one_line(tmp_path):
    rgb = pixels(plots.curves({"loss": [1.0, 0.5], "accuracy": [0.5, 0.8]}, tmp_path / "c.png"))
    assert has_colour(rgb, BLUE) and not has_colour(rgb, ORANGE)


def test_sample_grid_marks_wrong_predictions_red(mnist, tmp_path):
    (_, _), (x, y) = mnist
    images = x[:16] / 255.0
    right = np.eye(10)[y[:16]] * 0.9 + 0.01  # (16, 10): every prediction right
    rgb = pixels(plots.sample_predictions(images, y[:16], right, tmp_path / "ok.png"))
    assert has_colour(rgb, GREEN) and not has_colour(rgb, RED)
    wrong = right.copy()
    wrong[0] = np.roll(wrong[0], 1)  # the first one now predicted as another digit
    rgb = pixels(plots.sample_predictions(images, y[:16], wrong, tmp_path / "bad.png"))
    assert has_colour(rgb, RED)
    # Dark digit strokes on white: about a fifth of each digit cell is ink.
    assert (rgb.mean(axis=2) < 60).mean() > 0.02


def test_misclassified_grid_and_confusion_matrix(mnist, tmp_path):
    (_, _), (x, y) = mnist
    probs = np.eye(10)[(y[:50] + (np.arange(50) % 5 == 0)) % 10]  # every fifth one wrong
    rgb = pixels(plots.misclassified(x[:50] / 255.0, y[:50], probs, tmp_path / "m.png"))
    assert has_colour(rgb, RED) and rgb.shape[0] < 400  # 10 wrong: two rows of digits
    none = pixels(plots.misclassified(x[:5] / 255.0, y[:5], np.eye(10)[y[:5]], tmp_path / "none.png"))
    assert none.shape == (100, 400, 3) and (none.mean(axis=2) < 100).any()  # a line of text
    cm = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    cm[9, 4] = 45
    rgb = pixels(plots.confusion(cm, tmp_path / "cm.png"))
    assert rgb.shape[0] > 400 and (rgb.mean(axis=2) < 100).mean() > 0.01  # dark diagonal cells
