"""The bench's plain-PyTorch versions of the models, which the reference loop (bench/worker.py)
trains: `tutorial` for the speed, time-to-accuracy and profile jobs, and REFERENCE_MODELS, each
recipe's model written in torch layer for layer (tests/test_bench_recipe.py holds their parameter
counts to the Keras models'); build_reference(name) builds either. torch is imported inside each
builder: the bench's command imports this module without it.
"""


def _tutorial():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # (N, 4, 13, 13)
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # (N, 4, 5, 5)
        nn.Flatten(), nn.Linear(100, 10),                # (N, 10) logits
    )


# MNIST's pixel mean and standard deviation (models.MNIST_MEAN, MNIST_STD; not imported: models imports keras).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _bn(n, dims=2):
    """torch BatchNorm with Keras's defaults: epsilon 1e-3, moving average momentum 0.99 (torch: 0.01)."""
    from torch import nn

    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(n, eps=1e-3, momentum=0.01)


def _fast():
    from torch import nn

    return nn.Sequential(                                                        # input standardised once
        nn.Conv2d(1, 16, 5), nn.MaxPool2d(2), _bn(16), nn.ReLU(),                # (N, 16, 12, 12)
        nn.Conv2d(16, 32, 3), nn.MaxPool2d(2), _bn(32), nn.ReLU(),               # (N, 32, 5, 5)
        nn.Flatten(), nn.Linear(800, 128), nn.ReLU(), nn.Linear(128, 10))        # (N, 10) logits


def _shift_cnn():
    from torch import nn

    return nn.Sequential(                                                        # shifted on the batch
        nn.Conv2d(1, 32, 5, bias=False), _bn(32), nn.ReLU(), nn.MaxPool2d(2),    # (N, 32, 12, 12)
        nn.Conv2d(32, 64, 3, bias=False), _bn(64), nn.ReLU(), nn.MaxPool2d(2),   # (N, 64, 5, 5)
        nn.Flatten(), nn.Linear(1600, 256, bias=False), _bn(256, dims=1), nn.ReLU(),
        nn.Dropout(0.25), nn.Linear(256, 10))                                    # (N, 10) logits


def _shift_cnn_deep():
    from torch import nn

    return nn.Sequential(                                                        # shifted on the batch
        nn.Conv2d(1, 32, 5, bias=False), _bn(32), nn.ReLU(), nn.MaxPool2d(2),    # (N, 32, 12, 12)
        nn.Conv2d(32, 64, 3, bias=False), _bn(64), nn.ReLU(),                    # (N, 64, 10, 10)
        nn.Conv2d(64, 64, 3, bias=False), _bn(64), nn.ReLU(), nn.MaxPool2d(2),   # (N, 64, 4, 4)
        nn.Flatten(), nn.Linear(1024, 256, bias=False), _bn(256, dims=1), nn.ReLU(),
        nn.Dropout(0.25), nn.Linear(256, 10))                                    # (N, 10) logits


def _kerasio_convnet():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),                         # (N, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),                        # (N, 64, 5, 5)
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))                      # (N, 10) logits


# model name -> (torch builder, inputs standardised as the Keras model does, random shift in pixels)
REFERENCE_MODELS = {"fast": (_fast, True, 0), "shift-cnn": (_shift_cnn, True, 2),
                    "shift-cnn-deep": (_shift_cnn_deep, True, 2), "kerasio-convnet": (_kerasio_convnet, False, 0)}


def reference_unsupported(recipe):
    """Why the plain PyTorch reference cannot run this recipe (None when it can)."""
    if recipe["model"] not in REFERENCE_MODELS:
        return (f"model {recipe['model']!r} has no plain PyTorch version in the bench "
                f"(it has {', '.join(REFERENCE_MODELS)})")
    if recipe["optimizer"] != "adam":
        return f"optimizer {recipe['optimizer']!r}: the reference is written with Adam only"
    return None




def build_reference(name):
    """The plain-PyTorch model `name` (tutorial, or one of REFERENCE_MODELS), torch's default init."""
    if name == "tutorial":
        return _tutorial()
    if name not in REFERENCE_MODELS:
        raise ValueError(f"model {name!r} has no plain PyTorch version in the bench (it has tutorial, "
                         f"{', '.join(REFERENCE_MODELS)})")
    return REFERENCE_MODELS[name][0]()
