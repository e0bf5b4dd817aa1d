"""torch backend: device query, numerics, and (not) data parallelism."""

import torch

from ...errors import UsageError


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


def configure_serving():
    """The web server predicts one 28x28 image at a time: one CPU thread does that in about 5 ms,
    while torch's default pool spins on busy cores (measured 127 ms a digit, 2 shared cores).
    Returns a function that puts the previous setting back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(previous)


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under torch; None where
    Keras cannot: its SavedModel path under torch needs torch_xla, and with Keras 3.15.1 and
    torch 2.13 it fails before that, inside torch.export (measured)."""
    return {"onnx": ["onnx", "onnxscript"], "savedmodel": None}[fmt]


def loss_and_grads(model, x, y, from_logits=False):
    """Categorical cross-entropy of model(x) against one-hot y (model(x) are logits when
    from_logits), and its gradient for every trainable weight (in model.trainable_weights order),
    as (float, [numpy arrays])."""
    import keras

    model.zero_grad()
    probs = model(keras.ops.convert_to_tensor(x), training=False)  # (N, 10)
    loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits)(keras.ops.convert_to_tensor(y), probs)
    loss.backward()  # Keras variables are torch Parameters: autograd fills .value.grad
    grads = [w.value.grad.detach().cpu().numpy() for w in model.trainable_weights]
    return float(loss.detach().cpu()), grads


def set_threads(n):
    # Intra-op threads only: the inter-op pool can be sized once per process and is idle here.
    torch.set_num_threads(n)


def data_parallel(cfg):
    # keras.distribution has no torch implementation in Keras 3: say what to use instead.
    raise UsageError(f"Expected backend jax for --distribute data-parallel (Keras's DataParallel runs on "
                     f"jax). Received: backend={cfg.backend!r}. Use --backend jax, or for torch use "
                     "torch DDP (torch.nn.parallel.DistributedDataParallel) launched with torchrun.")
