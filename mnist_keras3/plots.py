"""Pictures of a run: training curves, sample predictions, confusion matrix, misclassified images.

Any image size and channels: grayscale shows dark ink on white (as digits on paper), RGB as it is.
`class_names` (the model's record, records.py) label titles and axes; indices when absent.

matplotlib's object API (Figure + the Agg canvas), not pyplot: no global figure state and no
display needed, so it is safe in a server thread too. PNGs are written atomically (runs.atomic_write).
Needs no keras: models are passed in and called through `.predict`.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import runs

GOOD, BAD = "#1a7f37", "#cf222e"  # title colours: right / wrong prediction


def save(fig, path):
    FigureCanvasAgg(fig)
    return runs.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi))


def curves(history, path, title=None):
    """curves.png: loss and accuracy per epoch, training and validation (Keras history keys)."""
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=False):
        for name, style in ((key, "-o"), (f"val_{key}", "--s")):
            values = history.get(name)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, label="validation" if name.startswith("val_") else "training")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return save(fig, path)


def _name(class_names, i):
    i = int(i)
    return str(class_names[i]) if class_names is not None and i < len(class_names) else str(i)


def _shown(img):
    """(H, W) for grayscale, (H, W, 3) for RGB, in [0, 1]; a flat 784 vector is a 28x28 digit."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 1:
        side = int(round(np.sqrt(img.size)))
        img = img.reshape(side, side)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return np.clip(img, 0, 1)


def digit_grid(images, path, titles, colours, title=None, cols=8):
    """A grid of images (grayscale as dark ink on white, RGB as is), one short title each."""
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(1.25 * cols, 1.45 * rows + (0.4 if title else 0)), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, text, colour in zip(axes, images, titles, colours, strict=False):
        shown = _shown(img)
        if shown.ndim == 2:
            ax.imshow(shown, cmap="gray_r", vmin=0, vmax=1)
        else:
            ax.imshow(shown)
        ax.set_title(text, fontsize=8, color=colour)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def sample_predictions(images, labels, probs, path, title="sample test images: predicted (probability)",
                       class_names=None):
    """samples.png: the first test images with the model's guess; red where it is wrong."""
    pred = probs.argmax(axis=1)
    n = lambda i: _name(class_names, i)  # noqa: E731
    titles = [f"{n(p)} ({probs[i, p]:.2f})" + ("" if p == t else f" true {n(t)}")
              for i, (p, t) in enumerate(zip(pred, labels, strict=False))]
    colours = [GOOD if p == t else BAD for p, t in zip(pred, labels, strict=False)]
    return digit_grid(images, path, titles, colours, title=title)


def misclassified(images, labels, probs, path, limit=40, class_names=None):
    """misclassified.png: wrong predictions, the most confident mistakes first."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    n = lambda i: _name(class_names, i)  # noqa: E731
    titles = [f"true {n(labels[i])} → {n(pred[i])} ({probs[i, pred[i]]:.2f})" for i in wrong]
    if not len(wrong):
        fig = Figure(figsize=(4, 1), dpi=100)
        fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        return save(fig, path)
    title = f"{len(wrong)} of {int((pred != labels).sum())} misclassified test images, most confident first"
    return digit_grid(images[wrong], path, titles, [BAD] * len(wrong), title=title)


def confusion(matrix, path, title="confusion matrix (test set)", class_names=None):
    """confusion_matrix.png: counts, true class by row, predicted class by column."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(6.2, 5.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    # Log colour scale: the diagonal (~1000) would otherwise wash out the few mistakes.
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    k = len(matrix)
    for i in range(k):
        for j in range(k):
            if matrix[i, j]:
                dark = np.log1p(matrix[i, j]) > 0.6 * np.log1p(matrix.max())
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    names = [_name(class_names, i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if any(len(c) > 2 for c in names) else 0, ha="right"
                  if any(len(c) > 2 for c in names) else "center", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    return save(fig, path)


def write_run_pictures(run_dir, history, model, x_test, y_test, n_samples=32, class_names=None):
    """Every training run: curves.png and samples.png in its run folder. y_test may be one-hot."""
    labels = np.asarray(y_test)
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
    probs = np.asarray(model.predict(x_test[:n_samples], verbose=0))  # (n, 10)
    return [
        curves(history, run_dir / "curves.png", title=run_dir.name),
        sample_predictions(x_test[:n_samples], labels[:n_samples], probs, run_dir / "samples.png",
                           class_names=class_names),
    ]
