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


def loss_and_grads(model, x, y):
    """Categorical cross-entropy of model(x) against one-hot y, and its gradient for every
    trainable weight (in model.trainable_weights order), as (float, [numpy arrays])."""
    import keras

    model.zero_grad()
    probs = model(keras.ops.convert_to_tensor(x), training=False)  # (N, 10)
    loss = keras.losses.CategoricalCrossentropy()(keras.ops.convert_to_tensor(y), probs)
    loss.backward()  # Keras variables are torch Parameters: autograd fills .value.grad
    grads = [w.value.grad.detach().cpu().numpy() for w in model.trainable_weights]
    return float(loss.detach().cpu()), grads
