import numpy as np
import pytest

EXPECTED = {  # name: (total, trainable)
    "tutorial": (1198, 1198),
    "tutorial-bn": (2190, 2174),
    "strong": (141994, 141418),
    "strong-noaug": (141994, 141418),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(keras, name):
    from mnist_keras3 import models

    counts = models.parameter_counts(models.build_model(name))
    assert (counts["total"], counts["trainable"]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_outputs_are_probabilities(keras, name, small_batch):
    from mnist_keras3 import models

    x, _ = small_batch
    probs = np.asarray(keras.ops.convert_to_numpy(models.build_model(name)(x)))
    assert probs.shape == (64, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_registry_rejects_unknown_names(keras):
    from mnist_keras3 import models
    from mnist_keras3.errors import UsageError

    expected = "Expected a model among strong, strong-noaug, tutorial, tutorial-bn. Received: model='lenet'"
    with pytest.raises(UsageError, match=expected):
        models.build_model("lenet")
