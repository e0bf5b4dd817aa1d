"""Which images to train on, by one config key (`dataset`):

    mnist           the verified loader in data/mnist.py (SHA-256 checked, offline once cached)
    fashion_mnist   keras.datasets.fashion_mnist.load_data() (downloads to $KERAS_HOME/datasets)
    cifar10         keras.datasets.cifar10.load_data()       (downloads to $KERAS_HOME/datasets)
    folder:PATH     a user's images, one sub-folder per class, the layout and file types of
                    keras.utils.image_dataset_from_directory; PATH/train and PATH/test, if both
                    exist, are the two splits, else a seeded 20% of the images is the test split.

Every dataset comes out the same way (`preprocess`): float32 images (N, H, W, C) in [0, 1], one-hot
float32 labels (N, K), class names and the input shape, so one model definition fits them all.
`split_validation` holds out the validation split. Call after the backend is chosen (the Keras
loaders import keras); importing this package does not import keras.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np
import PIL.Image

from ..errors import DataError
from . import mnist

FOLDER_PREFIX = "folder:"
FOLDER_TEST_FRACTION = 0.2
# What image_dataset_from_directory reads (keras.src.utils.image_dataset_utils.ALLOWLIST_FORMATS).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
# The files keras.datasets.<name>.load_data() keeps under <keras home>/datasets once downloaded.
KERAS_CACHE_FILES = {
    "fashion_mnist": [f"fashion-mnist/{f}" for f in (
        "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")],
    "cifar10": ["cifar-10-batches-py-target_archive"],
}


@dataclasses.dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    y_train: np.ndarray  # float32 one-hot (N, K)
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)

    def describe(self):
        """What metrics.json records, so predict can name the classes."""
        return {"name": self.name, "class_names": self.class_names, "input_shape": list(self.input_shape),
                "train_examples": len(self.x_train), "test_examples": len(self.x_test)}


def load(name, data_dir=None, seed=0):
    """The dataset called `name` (a config `dataset` value), preprocessed."""
    if name == "mnist":
        (x_train, y_train), (x_test, y_test) = mnist.load_mnist(data_dir)
    elif name in KERAS_CACHE_FILES:
        (x_train, y_train), (x_test, y_test) = load_keras_dataset(name)
    elif name.startswith(FOLDER_PREFIX):
        (x_train, y_train), (x_test, y_test), names = load_folder(name[len(FOLDER_PREFIX):], seed)
        return _prepared(name, x_train, y_train, x_test, y_test, names)
    else:  # config.validate() lets nothing else through
        raise DataError(f"Unknown dataset {name!r}.")
    return _prepared(name, x_train, y_train, x_test, y_test, CLASS_NAMES[name])


def _prepared(name, x_train, y_train, x_test, y_test, class_names):
    k = len(class_names)
    return Dataset(name, *preprocess(x_train, y_train, k), *preprocess(x_test, y_test, k), list(class_names))


def preprocess(x, y=None, num_classes=10):
    """uint8 images (N, H, W) or (N, H, W, C) -> float32 (N, H, W, C) in [0, 1]; labels (N,) or
    (N, 1) -> one-hot float32 (N, num_classes). Without y, the images only."""
    x = np.asarray(x, dtype=np.float32) / 255.0
    x = x[..., None] if x.ndim == 3 else x
    if y is None:
        return x
    return x, np.eye(num_classes, dtype=np.float32)[np.ravel(y).astype(np.int64)]


def split_validation(x, y, fraction):
    """Hold out the last `fraction` of (x, y), like Keras's validation_split."""
    if not fraction:
        return (x, y), None
    n_val = max(1, int(round(len(x) * fraction)))
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


# ---------------------------------------------------------------- Keras's downloadable datasets

def keras_home():
    # Where Keras's get_file() caches downloads: $KERAS_HOME, else ~/.keras (as keras/src/backend/config.py).
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")))


def keras_cache_missing(name):
    """The files of dataset `name` absent from the Keras cache ([] when it can load offline)."""
    base = keras_home() / "datasets"
    return [str(base / f) for f in KERAS_CACHE_FILES[name] if not (base / f).exists()]


def load_keras_dataset(name):
    import keras

    where = keras_home() / "datasets"
    if keras_cache_missing(name) and os.environ.get(mnist.ENV_OFFLINE, "") not in ("", "0"):
        raise DataError(f"{name} is not in the Keras cache ({where}) and {mnist.ENV_OFFLINE}=1 forbids "
                        f"downloading it. Unset {mnist.ENV_OFFLINE} on a machine with internet, or copy "
                        f"Keras's {name} files into {where}.")
    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as e:  # get_file raises a bare Exception on network errors
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"keras.datasets.{name}.load_data() failed: {reason}. It downloads on first use: "
                        f"connect to the internet once, or copy Keras's {name} files into {where}.") from e


# ---------------------------------------------------------------- a folder of images

def load_folder(path, seed=0):
    """uint8 images and int labels from a class-per-folder tree; returns train, test, class names."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist. Pass folder:PATH where PATH holds one "
                        "sub-folder of images per class (or train/ and test/ trees of them).")
    if (root / "train").is_dir() and (root / "test").is_dir():
        x_train, y_train, names, shape = read_tree(root / "train")
        x_test, y_test, test_names, _ = read_tree(root / "test", shape)
        if test_names != names:
            raise DataError(f"{root}/test has classes {test_names} but {root}/train has {names}; "
                            "give both the same class sub-folders.")
        return (x_train, y_train), (x_test, y_test), names
    x, y, names, _ = read_tree(root)
    order = np.random.default_rng(seed).permutation(len(x))  # seeded: the same split every run
    n_test = max(1, int(round(len(x) * FOLDER_TEST_FRACTION)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test]), names


def read_tree(folder, shape=None):
    """Every image under folder/<class>/ as uint8 (N, H, W, C), labels by sorted class name.

    Images are read with keras.utils.load_img (Pillow) into numpy, so no tf.data or grain is
    needed under torch or jax. The first image fixes the size and channels (grayscale or RGB)
    unless `shape` (H, W, C) is given; images of another size are resized to it (bilinear).
    """
    import keras

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(p, label) for label, c in enumerate(classes)
             for p in sorted((folder / c).rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
    if len(classes) < 2 or not files:
        raise DataError(f"{folder} has {len(classes)} class sub-folder(s) and {len(files)} images; expected "
                        f"at least 2 sub-folders (one per class) of {'/'.join(IMAGE_EXTENSIONS)} files.")
    if shape is None:
        with PIL.Image.open(files[0][0]) as first:  # only the header is read
            channels = 1 if first.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
            shape = (first.height, first.width, channels)
    color_mode = "grayscale" if shape[2] == 1 else "rgb"
    x = np.empty((len(files), *shape), dtype=np.uint8)  # (N, H, W, C)
    for i, (path, _) in enumerate(files):
        try:
            img = keras.utils.load_img(path, color_mode=color_mode, target_size=shape[:2],
                                       interpolation="bilinear")
        except Exception as e:
            raise DataError(f"cannot read the image {path}: {type(e).__name__}: {e}") from e
        x[i] = keras.utils.img_to_array(img, dtype="uint8").reshape(shape)
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y, classes, shape
