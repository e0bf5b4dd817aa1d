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


def set_threads(n):
    # Intra-op threads only: the inter-op pool can be sized once per process and is idle here.
    torch.set_num_threads(n)
