"""Faster CPU kernels for the jax loop, swapped in by rewriting the traced program, not the model.

Profiled on a CPU (docs/speed.md has the figures), XLA:CPU spends most of a training step of the
tutorial CNN in kernels that are slow for 1- and 4-channel tensors: the forward convolutions, the
second convolution's input gradient and the max-pool gradient (`select_and_scatter`). Here the
convolutions and their gradients are matrix products of the shifted windows ("im2col"), and the max
pool is a reduce whose gradient is a first-maximum mask. Convolutions with few channels (the
tutorial's 1 -> 4 and 4 -> 4) are computed a 2 x 2 block of outputs at a time, a product XLA:CPU
vectorises, where im2col's 4-column output did not.

`rewrite(fn)` returns a function that computes the same values as `fn`: it traces `fn` to a jaxpr
and evaluates it equation by equation, replacing only the equations that match these patterns
(2-D, stride 1, undilated, ungrouped NHWC/HWIO convolutions with few channels; max pools whose
window equals their stride) with `custom_vjp` functions. Everything else, nested jit calls
included, is evaluated as it was. Values and gradients match jax's own (tests/test_jax_kernels.py),
so `jax.grad` of the rewritten function trains the same model.
"""

import functools

import jax
import jax.numpy as jnp

try:  # jaxpr internals: a jax without them turns the native loop off (internals_problem)
    from jax.extend.core import Literal
except ImportError:
    Literal = None

# in x out channels up to which the swap was measured faster: the tutorial's 4 and 16, and the
# recipes' 16 x 32 (fast), 32 x 64 (shift-cnn, kerasio-convnet), whose XLA input and kernel
# gradients took most of their step (docs/speed.md). Wider ones: not measured.
MAX_CONV_CHANNELS = 4096
# in x out channels up to which a convolution is computed in 2 x 2 output blocks (_blocked_conv):
# measured faster for the tutorial CNN's 1 x 4 and 4 x 4 and the fast model's 5 x 5, 1 x 16;
# slower for shift-cnn's 1 x 32, whose kernel gradient then costs more (docs/speed.md).
BLOCKED_MAX_CHANNELS = 16
NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))  # lhs/rhs/out specs of NHWC x HWIO -> NHWC


def internals_problem():
    """None when the jaxpr internals rewrite() evaluates with are there (Literal, eqn.primitive's
    get_bind_params and bind, eqn.ctx.manager, pjit's "jaxpr" param); else what is missing."""
    if Literal is None:
        return f"jax {jax.__version__} has no jax.extend.core.Literal"
    try:
        jaxpr = jax.make_jaxpr(lambda x: jax.jit(jnp.sin)(x) + 1.0)(1.0).jaxpr
        for eqn in jaxpr.eqns:
            eqn.primitive.get_bind_params(eqn.params), eqn.ctx.manager  # noqa: B018
        nested = [e for e in jaxpr.eqns if e.primitive.name in ("pjit", "jit")]
        if not nested or "jaxpr" not in nested[0].params:
            return f"jax {jax.__version__} no longer names a nested jit's program params['jaxpr']"
        out = _eval(jaxpr, [], [jnp.float32(0.5)])[0]
        if abs(float(out) - (float(jnp.sin(0.5)) + 1.0)) > 1e-6:
            return f"jax {jax.__version__}: evaluating a jaxpr equation by equation gives other values"
    except (AttributeError, TypeError, KeyError) as e:
        return f"jax {jax.__version__} changed its jaxpr internals ({type(e).__name__}: {e})"
    return None


# XLA:CPU hands dots, reductions and elementwise ops to YNNPACK fusions by default. On the tiny
# tensors of a model this small their cost per call outweighs their speed (the tutorial CNN's max
# pool and bias-gradient reduces ran faster as XLA's own loops); on shift-cnn's, XLA's loops
# made the Adam update many times slower. So only models up to this many parameters compile their
# step without YNNPACK (docs/speed.md, scripts/jax_step_ops.py).
SMALL_MODEL_PARAMS = 10_000
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}  # an XLA debug option: checked below


@functools.cache  # one tiny compile per process, not one per Trainer
def compiler_options_problem():
    """None when this jax's XLA accepts NO_YNN as a compile option; else what it said. The option
    is experimental: tests/test_jax_kernels.py asserts None, so an upgrade that drops it fails
    loudly there, while the loop compiles as XLA would by default (same numbers, slower)."""
    try:
        jax.jit(lambda x: x.sum(), compiler_options=NO_YNN)(jnp.ones(2)).block_until_ready()
    except Exception as e:  # XlaRuntimeError / JaxRuntimeError (INVALID_ARGUMENT), TypeError
        return f"jax {jax.__version__} does not take the compile option {NO_YNN}: {str(e).splitlines()[0]}"
    return None


def compiler_options(parameters):
    """Compile options for the training step on XLA:CPU of a model with this many parameters (the
    caller decides the platform: these are XLA:CPU options)."""
    if parameters > SMALL_MODEL_PARAMS or compiler_options_problem():
        return None
    return NO_YNN


def has_primitive(jaxpr, name):
    """Whether `name` (e.g. "conv_general_dilated") is left anywhere in a jaxpr, nested ones included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            return True
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)  # ClosedJaxpr -> Jaxpr
            if hasattr(inner, "eqns") and has_primitive(inner, name):
                return True
    return False


def rewrite(fn):
    """fn with the slow conv/pool kernels replaced; same signature, same pytrees out."""
    @functools.wraps(fn)
    def wrapped(*args):
        closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
        out = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shapes), out)
    return wrapped


def _eval(jaxpr, consts, args):
    env = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts, strict=False):
        env[var] = val
    for var, val in zip(jaxpr.invars, args, strict=False):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name, params = eqn.primitive.name, eqn.params
        if name in ("pjit", "jit") and "jaxpr" in params:  # a nested jit: look inside it too
            inner = params["jaxpr"]
            out = _eval(inner.jaxpr, inner.consts, invals)
        elif name == "conv_general_dilated" and _small_plain_conv(params, *invals):
            out = [_conv(*invals, params["padding"])]
        elif name == "reduce_window_max" and _tiling_pool(params, invals[0]):
            out = [_tiled_max_pool(invals[0], params["window_dimensions"])]
        else:
            bind = eqn.primitive.get_bind_params(params)  # jax < 0.7: (subfuns, params)
            subfuns, bind = bind if isinstance(bind, tuple) else ((), bind)
            with eqn.ctx.manager:
                out = eqn.primitive.bind(*subfuns, *invals, **bind)
            out = out if eqn.primitive.multiple_results else [out]
        for var, val in zip(eqn.outvars, out, strict=False):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


# ---------------------------------------------------------------- convolution

def _small_plain_conv(p, x, k):
    dn = p["dimension_numbers"]
    specs = (tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec))
    return (x.ndim == 4 and specs == NHWC and tuple(p["window_strides"]) == (1, 1)
            and all(lo >= 0 and hi >= 0 for lo, hi in p["padding"])
            and tuple(p["lhs_dilation"]) == (1, 1) and tuple(p["rhs_dilation"]) == (1, 1)
            and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
            and k.shape[2] * k.shape[3] <= MAX_CONV_CHANNELS and x.dtype == k.dtype == jnp.float32)


def _conv(x, k, padding):
    """The matched convolution: pad (SAME and explicit padding), then a VALID one."""
    (top, bottom), (left, right) = padding
    if top or bottom or left or right:
        x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    if k.shape[2] * k.shape[3] <= BLOCKED_MAX_CHANNELS:
        return _blocked_conv(x, k)
    return _im2col_conv(x, k)


def _im2col(x, kh, kw):
    """The windows of a VALID kh x kw convolution, as a matrix: (N, H, W, C) -> (N*h*w, kh*kw*C),
    or, for one input channel, its transpose (kh*kw, N*h*w): whole shifted images stacked, which is
    a plain copy, where interleaving 9 single floats per row was the slowest kernel at batch 64."""
    n, h, w, c = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1, x.shape[3]
    shifted = [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]  # each (N, h, w, C)
    if c == 1:
        return jnp.stack(shifted).reshape(kh * kw, n * h * w)
    return jnp.concatenate(shifted, axis=-1).reshape(n * h * w, kh * kw * c)


def _conv_from_cols(cols, k, shape):
    kh, kw, cin, cout = k.shape
    kmat = k.reshape(kh * kw * cin, cout)
    out = (kmat.T @ cols).T if cin == 1 else cols @ kmat  # (N*h*w, Cout): one matrix product
    return out.reshape(shape[0], shape[1] - kh + 1, shape[2] - kw + 1, cout)


@jax.custom_vjp
def _im2col_conv(x, k):
    """VALID, stride-1 convolution as one matrix product of the shifted windows ("im2col"):
    x (N, H, W, Cin), k (kh, kw, Cin, Cout) -> (N, H-kh+1, W-kw+1, Cout)."""
    return _conv_from_cols(_im2col(x, *k.shape[:2]), k, x.shape)


def _im2col_conv_fwd(x, k):
    cols = _im2col(x, *k.shape[:2])
    return _conv_from_cols(cols, k, x.shape), (cols, k)


def _im2col_conv_bwd(res, g):
    cols, k = res
    kh, kw, cin, cout = k.shape
    # Kernel gradient: windows^T @ output gradient, one product with a long contraction.
    g_mat = g.reshape(-1, cout)  # (N*h*w, Cout)
    dk = (cols @ g_mat if cin == 1 else cols.T @ g_mat).reshape(kh, kw, cin, cout)
    # Input gradient: the full correlation of g with the flipped, transposed kernel. Unused for
    # the first layer, whose input is data: XLA then drops it.
    g_pad = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    flipped = k[::-1, ::-1].transpose(0, 1, 3, 2)  # (kh, kw, Cout, Cin)
    dx = _conv_from_cols(_im2col(g_pad, kh, kw), flipped, g_pad.shape)  # (N, H, W, Cin)
    return dx, dk


_im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


def _blocks(x, kh, kw):
    """x (N, H, W, C) -> the (kh+1) x (kw+1) windows at stride 2 of a VALID kh x kw convolution's
    2 x 2 output blocks, one block a row: (N*h2*w2, (kh+1)(kw+1) C), ordered (p, q, C). An odd
    output size gets a zero edge, so that its last block is whole."""
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    h2, w2 = (ho + 1) // 2, (wo + 1) // 2
    if (ho % 2) or (wo % 2):
        x = jnp.pad(x, ((0, 0), (0, ho % 2), (0, wo % 2), (0, 0)))
    windows = [x[:, p:p + 2 * h2 - 1:2, q:q + 2 * w2 - 1:2, :] for p in range(kh + 1) for q in range(kw + 1)]
    return jnp.concatenate(windows, axis=-1).reshape(x.shape[0] * h2 * w2, -1)


def _block_kernel(k):
    """k (kh, kw, Cin, Cout) at the 4 offsets of a 2 x 2 block: ((kh+1)(kw+1) Cin, 4 Cout),
    rows (p, q, Cin) as _blocks orders a window, columns (block row, block column, Cout)."""
    at = [jnp.pad(k, ((i, 1 - i), (j, 1 - j), (0, 0), (0, 0))) for i in (0, 1) for j in (0, 1)]
    return jnp.stack(at, axis=3).reshape(-1, 4 * k.shape[3])


@jax.custom_vjp
def _blocked_conv(x, k):
    """A VALID, stride-1 convolution computed a 2 x 2 block of outputs at a time: each block's
    window times the kernel at the block's 4 offsets, one matrix product. For the tutorial's
    1 -> 4 channels its operands are 16 x 16 where im2col's are 9 x 4 (4 output columns): XLA:CPU
    vectorises this one (docs/speed.md). An odd output size is computed one larger and cut.
    x (N, H, W, Cin), k (kh, kw, Cin, Cout) -> (N, H-kh+1, W-kw+1, Cout)."""
    return _blocked_conv_fwd(x, k)[0]


def _blocked_conv_fwd(x, k):
    kh, kw, _, cout = k.shape
    n, ho, wo = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
    h2, w2 = (ho + 1) // 2, (wo + 1) // 2
    windows = _blocks(x, kh, kw)
    out = (windows @ _block_kernel(k)).reshape(n, h2, w2, 2, 2, cout)  # (N, h2, w2, 2, 2, Cout)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h2, 2 * w2, cout)  # (N, 2 h2, 2 w2, Cout)
    return out[:, :ho, :wo], (windows, k)


def _blocked_conv_bwd(res, g):
    windows, k = res
    kh, kw, cin, cout = k.shape
    n, ho, wo, _ = g.shape
    h2, w2 = (ho + 1) // 2, (wo + 1) // 2
    # Kernel gradient: windows^T @ the output gradient in blocks, then each offset's share.
    g_blocks = jnp.pad(g, ((0, 0), (0, 2 * h2 - ho), (0, 2 * w2 - wo), (0, 0)))
    g_blocks = g_blocks.reshape(n, h2, 2, w2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 4 * cout)
    dkmat = (windows.T @ g_blocks).reshape(kh + 1, kw + 1, cin, 4, cout)
    dk = sum(dkmat[i:i + kh, j:j + kw, :, 2 * i + j] for i in (0, 1) for j in (0, 1))
    # Input gradient: the full correlation of g with the flipped, transposed kernel (blocked too).
    # Unused for the first layer, whose input is data: XLA then drops it.
    g_pad = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dx = _blocked_conv(g_pad, k[::-1, ::-1].transpose(0, 1, 3, 2))  # (N, H, W, Cin)
    return dx, dk


_blocked_conv.defvjp(_blocked_conv_fwd, _blocked_conv_bwd)


# ---------------------------------------------------------------- max pooling

def _tiling_pool(p, x):
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    return (x.ndim == 4 and win == strides and win[0] == win[3] == 1
            and all(tuple(pad) == (0, 0) for pad in p["padding"])
            and all(d == 1 for d in p["base_dilation"]) and all(d == 1 for d in p["window_dilation"])
            and jnp.issubdtype(x.dtype, jnp.floating))


def _corners(x, win):
    """The wh*ww strided views of x, one per window position, row-major: each (N, H//wh, W//ww, C)."""
    _, wh, ww, _ = win
    h2, w2 = x.shape[1] // wh, x.shape[2] // ww
    return [x[:, i:h2 * wh:wh, j:w2 * ww:ww, :] for i in range(wh) for j in range(ww)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiled_max_pool(x, win):
    # A reduce over the (N, h2, wh, w2, ww, C) view: XLA keeps a reduce's result in memory, where
    # an elementwise max of the corners gets recomputed inside each of its consumers.
    _, wh, ww, _ = win
    n, h, w, c = x.shape
    h2, w2 = h // wh, w // ww
    return x[:, :h2 * wh, :w2 * ww, :].reshape(n, h2, wh, w2, ww, c).max(axis=(2, 4))  # (N, h2, w2, C)


def _tiled_max_pool_fwd(x, win):
    top = _tiled_max_pool(x, win)
    return top, (x, top)


def _tiled_max_pool_bwd(win, res, g):
    # The gradient goes to the first maximum of each window in row-major order, as XLA's
    # select_and_scatter does. The shares are stacked into an (N, h2, wh, w2, ww, C) array whose
    # row-major reshape is (N, H, W, C): no scatter, no arg-max, no transpose, and XLA fuses it.
    x, top = res
    _, wh, ww, _ = win
    n, h, w, c = x.shape
    h2, w2 = h // wh, w // ww
    taken = jnp.zeros(g.shape, bool)
    shares = []
    for corner in _corners(x, win):
        first = (corner == top) & ~taken
        taken = taken | first
        shares.append(jnp.where(first, g, 0).astype(x.dtype))  # (N, h2, w2, C)
    rows = [jnp.stack(shares[i * ww:(i + 1) * ww], axis=3) for i in range(wh)]  # (N, h2, w2, ww, C)
    dx = jnp.stack(rows, axis=2).reshape(n, h2 * wh, w2 * ww, c)  # (N, h2, wh, w2, ww, C) -> (N, H', W', C)
    return (jnp.pad(dx, ((0, 0), (0, h - h2 * wh), (0, w - w2 * ww), (0, 0))),)  # edges: no gradient


_tiled_max_pool.defvjp(_tiled_max_pool_fwd, _tiled_max_pool_bwd)
