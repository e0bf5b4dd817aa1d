"""torch backend: device query and numerics."""

import torch


def framework_version():
    return torch.__version__


def device_name():
    # Keras's torch backend places tensors on CUDA whenever it is available.
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "CPU"


def configure_numerics():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under torch; None where
    Keras cannot: its SavedModel path under torch needs torch_xla, and with Keras 3.15.1 and
    torch 2.13 it fails before that, inside torch.export (measured)."""
    return {"onnx": ["onnx", "onnxscript"], "savedmodel": None}[fmt]
