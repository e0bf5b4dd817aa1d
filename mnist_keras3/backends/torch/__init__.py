"""torch backend: device query, numerics, memory, export and autodiff (data parallelism: distribute.py)."""

import torch

from ..common import host_memory


def framework_version():
    return torch.__version__


def device_type():
    """The device type Keras's torch backend puts new tensors on ("cuda", "mps", "cpu", ...): its own
    choice (an accelerator when torch finds one, unless KERAS_TORCH_DEVICE says otherwise), read off
    a tensor it makes rather than guessed again here."""
    import keras

    return keras.ops.convert_to_tensor(0.0).device.type


def device_name():
    kind = device_type()  # torch.cuda and the other accelerators' modules name their device; torch.cpu does not
    return getattr(torch.get_device_module(kind), "get_device_name", kind.upper)()


def configure_numerics():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def configure_compile_cache(folder):
    """Nothing to set: torch.compile keeps what it compiled on disk by default (inductor's FX graph
    and kernel caches, in their own folder), and a traced step is quick to make again."""


def configure_serving():
    """The web server predicts one 28x28 image at a time: one CPU thread does that quickly, while
    torch's default pool of one thread per core spins on cores the server's other work is using
    and made each digit many times slower (docs/serving.md).
    Returns a function that puts the previous setting back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(previous)


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under torch; None where
    Keras cannot: its SavedModel path under torch needs torch_xla, and with Keras 3.15.1 and
    torch 2.13 it fails before that, inside torch.export (tried)."""
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


def is_out_of_memory(error):
    """Whether `error` is torch failing to allocate (an accelerator's OutOfMemoryError, or the CPU
    allocator's RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def device_memory():
    """Bytes of memory of the device Keras trains on (the host's RAM for the CPU), or None."""
    kind = device_type()
    if kind == "cpu":
        return host_memory()
    props = getattr(torch.get_device_module(kind), "get_device_properties", None)
    return getattr(props(), "total_memory", None) if props else None


def set_threads(n):
    # Intra-op threads only: the inter-op pool can be sized once per process and is idle here.
    torch.set_num_threads(n)
