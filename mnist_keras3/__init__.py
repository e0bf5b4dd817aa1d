"""mnist-keras3: one Keras 3 CNN, trained under torch, tensorflow or jax.

Importing the package never imports keras: the backend is chosen by the entry points
(`python -m mnist_keras3.train`, ...) before keras is first imported.
"""

__version__ = "0.1.0"
