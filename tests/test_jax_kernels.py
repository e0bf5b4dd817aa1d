"""The jax loop's kernel swap computes what jax computes: values and gradients, ties included."""

import numpy as np
import pytest

pytestmark = pytest.mark.jax


@pytest.fixture
def jk(keras):
    from mnist_keras3.backends.jax import kernels

    return kernels


def _compare(jk, fn, *args, atol=1e-5):
    import jax

    swapped = jk.rewrite(fn)
    np.testing.assert_allclose(swapped(*args), fn(*args), atol=atol, rtol=1e-5)
    grads = jax.grad(lambda *a: (fn(*a) ** 2).sum(), argnums=tuple(range(len(args))))(*args)
    swapped_grads = jax.grad(lambda *a: (swapped(*a) ** 2).sum(), argnums=tuple(range(len(args))))(*args)
    for g, s in zip(grads, swapped_grads, strict=False):
        np.testing.assert_allclose(s, g, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("shape,kernel,padding", [
    ((3, 28, 28, 1), (3, 3, 1, 4), "VALID"),
    ((2, 13, 13, 4), (3, 3, 4, 4), "VALID"),
    ((2, 14, 14, 4), (3, 3, 4, 4), "SAME"),   # the tutorial-bn model's padding
    ((2, 9, 7, 2), (2, 3, 2, 3), "VALID"),    # odd sizes, non-square kernel
    ((2, 10, 9, 3), (3, 3, 3, 8), "VALID"),   # more channels: im2col, not 2 x 2 blocks
])
def test_small_convolutions_match_xla(jk, shape, kernel, padding):
    import jax

    rng = np.random.default_rng(0)
    x, k = rng.normal(size=shape).astype("float32"), rng.normal(size=kernel).astype("float32")
    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _compare(jk, conv, x, k, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 26, 26, 4), (2, 11, 11, 4), (1, 5, 7, 3)])  # odd: edges dropped
def test_max_pool_matches_xla_with_ties(jk, shape):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    # Rounded and relu'd: many windows hold equal maxima (zeros and repeats), where the gradient
    # must go to the first one in row-major order, as XLA's select_and_scatter sends it.
    x = np.maximum(np.round(rng.normal(size=shape), 1), 0).astype("float32")
    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    _compare(jk, lambda x: pool(x) * jnp.arange(1, pool(x).size + 1, dtype=x.dtype).reshape(pool(x).shape), x)


def _xla_conv(x, k, strides=(1, 1)):
    import jax

    return jax.lax.conv_general_dilated(x, k, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_a_swapped_and_a_kept_convolution_beside_other_operations(jk):
    """On random inputs, in one program with a nested jit and other operations: a convolution the
    size rule swaps (8 x 8 channels) and two it keeps (64 x 128 channels, over MAX_CONV_CHANNELS;
    stride 2), each against XLA's own result; only the kept ones are left as XLA convolutions."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    x, k = rng.normal(size=(2, 8, 8, 8)).astype("float32"), rng.normal(size=(3, 3, 8, 8)).astype("float32")
    wide_x = rng.normal(size=(1, 6, 6, 64)).astype("float32")
    wide_k = rng.normal(size=(3, 3, 64, 128)).astype("float32")
    assert 8 * 8 <= jk.MAX_CONV_CHANNELS < 64 * 128
    a = rng.normal(size=(4, 4)).astype("float32")
    inner = jax.jit(lambda a: jnp.tanh(a) @ a.T)

    def fn(x, k, wide_x, wide_k, a):
        return (_xla_conv(x, k), _xla_conv(wide_x, wide_k), _xla_conv(x, k, strides=(2, 2)), inner(a),
                jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, 1), (1, 1), "VALID"))

    args = (x, k, wide_x, wide_k, a)
    expected = (_xla_conv(x, k), _xla_conv(wide_x, wide_k), _xla_conv(x, k, strides=(2, 2)),
                np.tanh(a) @ a.T, a)
    for got, want in zip(jk.rewrite(fn)(*args), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

    def left(f, *operands):
        return jk.has_primitive(jax.make_jaxpr(jk.rewrite(f))(*operands).jaxpr, "conv_general_dilated")

    assert not left(_xla_conv, x, k)  # swapped
    assert left(_xla_conv, wide_x, wide_k)  # kept: too many channels
    assert left(lambda x, k: _xla_conv(x, k, strides=(2, 2)), x, k)  # kept: stride 2


def test_has_primitive_finds_convolutions_left_in_nested_programs(jk):
    """The jax loop runs k steps in one lax.scan only when the step keeps no XLA convolution."""
    import jax
    import jax.numpy as jnp

    x, k = jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 1))
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    left = jax.make_jaxpr(lambda x, k: conv(x, k) * 2)(x, k).jaxpr
    assert jk.has_primitive(left, "conv_general_dilated")  # inside a nested jit
    assert not jk.has_primitive(jax.make_jaxpr(jk.rewrite(conv))(x, k).jaxpr, "conv_general_dilated")


def test_small_models_compile_without_ynnpack(jk):
    """The step of a small model compiles with an experimental XLA option (kernels.NO_YNN); a jax
    that no longer takes it must fail here, not only run slower."""
    assert jk.compiler_options_problem() is None
    assert jk.compiler_options(1_198) == jk.NO_YNN  # the tutorial CNN
    assert jk.compiler_options(jk.SMALL_MODEL_PARAMS + 1) is None


def test_blocked_and_im2col_convolutions_agree(jk):
    """Both swaps of a convolution, on the shapes the tutorial CNN gives them, against each other."""
    import jax

    rng = np.random.default_rng(3)
    for shape, kernel in (((4, 28, 28, 1), (3, 3, 1, 4)), ((4, 13, 13, 4), (3, 3, 4, 4))):
        x, k = rng.normal(size=shape).astype("float32"), rng.normal(size=kernel).astype("float32")
        np.testing.assert_allclose(jk._blocked_conv(x, k), jk._im2col_conv(x, k), atol=1e-5, rtol=1e-5)
        for a, b in zip(jax.grad(lambda x, k: (jk._blocked_conv(x, k) ** 2).sum(), argnums=(0, 1))(x, k),
                        jax.grad(lambda x, k: (jk._im2col_conv(x, k) ** 2).sum(), argnums=(0, 1))(x, k),
                        strict=True):
            np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)
