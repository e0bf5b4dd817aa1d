"""torch backend: device query, numerics, and (not) data parallelism."""

import torch

from ..errors import UsageError


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


def data_parallel(cfg):
    # keras.distribution has no torch implementation in Keras 3: say what to use instead.
    raise UsageError(f"Expected backend jax for --distribute data-parallel (Keras's DataParallel runs on "
                     f"jax). Received: backend={cfg.backend!r}. Use --backend jax, or for torch use "
                     "torch DDP (torch.nn.parallel.DistributedDataParallel) launched with torchrun.")
