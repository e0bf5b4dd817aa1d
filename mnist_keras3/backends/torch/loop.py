"""torch: the Keras model is an nn.Module. This loop drives autograd and the Keras optimizer directly,
skipping Keras's per-layer Python call path (most of `fit`'s cost on this model), in one of two ways:

- traced (jit_compile "off", and "auto" on the CPU): the training forward pass and the loss are
  traced once per batch shape with torch.jit.trace; Keras's plain Adam runs as torch's fused Adam
  kernel on the Keras optimizer's own variables.
- compiled (jit_compile "on", and "auto" on an accelerator): the forward pass and the loss, and
  Keras's plain Adam, are each compiled by torch.compile in "reduce-overhead" mode, which on a GPU
  replays each as a CUDA graph (one launch where eager torch launches a kernel per op, the host
  otherwise being the bottleneck for a model this small) and on the CPU is inductor's code alone:
  the same path, which the CPU tests force. Static shapes: one program per batch size.

Both read the learning rate on the device: a constant rate is the Keras Variable's tensor, and a
schedule's rates are computed on the CPU for a whole call and copied once (Keras's schedules branch
on the step with ops.cond, which on an accelerator waits for the device at every step)."""

import functools
import math
import sys
import time
import warnings

import numpy as np
import torch

from ...errors import brief
from ..loop import PHASES, check_compiled, device_images, keras_adam_problem, plain_adam
from ..parallel import share
from . import is_out_of_memory

DATA_PARALLEL = True  # --distribute data-parallel: DDP wraps the traced step when the process group is up


class _Clock:
    """Adds the seconds since the previous mark to phases[name] (nothing when phases is None).
    Kernels on an accelerator run asynchronously: the device's queue is drained before each
    reading (torch.get_device_module(...).synchronize, which is a no-op for the CPU)."""

    def __init__(self, phases, device):
        self.phases, self.sync = phases, torch.get_device_module(device.type).synchronize
        self.last = time.perf_counter()

    def mark(self, name):
        if self.phases is None:
            return
        self.sync()
        now = time.perf_counter()
        self.phases[name] += now - self.last
        self.last = now


def private_api_problem():
    """What this loop needs beyond torch's and Keras's public APIs, checked; None when all is there.
    tests/test_auto_loop.py asserts None, so a framework upgrade that removes one fails loudly there,
    while `--loop auto` falls back to fit with this message instead of crashing."""
    missing = [name for name, ok in (
        ("torch._fused_adam_", hasattr(torch, "_fused_adam_")),
        ("torch._C._jit_pass_dce", hasattr(torch._C, "_jit_pass_dce")),
        ("torch._C._jit_pass_inline", hasattr(torch._C, "_jit_pass_inline")),
        ("torch._C.parse_schema", hasattr(torch._C, "parse_schema")),
        ("torch._C.Graph.findAllNodes", hasattr(torch._C.Graph, "findAllNodes")),
        ("torch._C.Node.moveBefore", hasattr(torch._C.Node, "moveBefore")),
        ("torch._C.Node.moveAfter", hasattr(torch._C.Node, "moveAfter")),
        ("torch._C.Value.setType", hasattr(torch._C.Value, "setType")),
        ("torch._foreach_add_", hasattr(torch, "_foreach_add_")),
        ("torch._dynamo.mark_static_address", hasattr(torch._dynamo, "mark_static_address")),
        ("torch._dynamo.utils.counters", _has_skip_counter()),
    ) if not ok]
    problems = [f"torch {torch.__version__} lacks {', '.join(missing)}"] if missing else []
    problems += [p for p in (keras_adam_problem(),) if p]
    return "; ".join(problems) or None


def _has_skip_counter():
    try:
        return isinstance(cudagraph_skips(), int)
    except ImportError:
        return False


def cudagraph_skips():
    """How many times torch.compile has run a compiled program without its CUDA graph in this process
    (a private counter that torch._inductor.cudagraph_utils bumps; the reason is logged only under
    TORCH_LOGS=cudagraphs). tests/test_loops.py fails loudly if torch stops bumping it."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["cudagraph_skips"]


def unsupported_settings(cfg):
    """The compiled step is not wrapped in DDP here (torch.compile of a DDP module splits its graph
    at the gradient buckets; untested), so jit_compile "on" with data-parallel is refused ("auto"
    traces under DDP)."""
    if cfg.jit_compile == "on" and cfg.distribute != "none":
        return "the torch native loop does not compile its step under --distribute data-parallel (it traces it)"
    return None


def compiles(jit_compile, device_type, ddp=False):
    """Whether the step is compiled (torch.compile) rather than traced: jit_compile "on"/"off", or
    "auto": off the CPU (CUDA graphs), outside DDP."""
    if jit_compile in ("on", "off"):
        return jit_compile == "on"
    return device_type != "cpu" and not ddp


COMPILE_MODE = "reduce-overhead"  # torch.compile: CUDA graphs on a GPU; inductor's code alone elsewhere


class _LossAndHits(torch.nn.Module):
    """(x, one-hot y) -> (mean loss, number of arg-max hits): one traced graph per step. x as the
    trainer holds it: uint8 levels with `scale` (converted to float32 here, in the graph), or float32."""

    def __init__(self, model, loss_fn, scale=None):
        super().__init__()
        self.model = model  # a submodule (the logits view): its parameters are the Keras variables' tensors
        self.loss_fn = loss_fn
        self.scale = scale

    def forward(self, x, y):
        if self.scale:
            x = x.to(torch.float32) / self.scale  # (B, 28, 28, 1) uint8 -> float32 in [0, 1]
        logits = self.model(x, training=True)  # (B, 10)
        loss = torch.mean(self.loss_fn(y, logits))
        hits = (logits.argmax(-1) == y.argmax(-1)).sum()
        return loss, hits


def simplify_trace(graph):
    """Inline a traced step's calls into submodules (torch traces the Keras model's forward as a
    method call of its own, whose graph the passes below would not see), then drop its layout copies
    and no-op casts, fold its convolutions' bias adds and pool before ReLU; -> (copies, casts, biases,
    pools) changed. Same values, same gradients (tests/test_loops.py)."""
    torch._C._jit_pass_inline(graph)
    return drop_layout_copies(graph), drop_noop_casts(graph), fold_conv_bias(graph), pool_before_relu(graph)


def _int_list(value):
    """The ints of a traced list argument made of constants, else None."""
    node = value.node()
    if node.kind() == "prim::Constant":
        ints = value.toIValue()
    elif node.kind() == "prim::ListConstruct" and all(i.node().kind() == "prim::Constant" for i in node.inputs()):
        ints = [i.toIValue() for i in node.inputs()]
    else:
        return None
    return list(ints) if isinstance(ints, list | tuple) and all(isinstance(i, int) for i in ints) else None


def _sizes(value):
    t = value.type()
    return t.sizes() if isinstance(t, torch._C.TensorType) else None


def fold_conv_bias(graph):
    """Give each convolution its bias instead of adding it afterwards; return how many.

    Keras's torch Conv2D convolves without a bias, permutes the output to channels-last and adds
    the bias reshaped to (1, 1, 1, C): on the CPU that broadcast over an inner dimension of C values
    is an elementwise loop several times slower than an add of two same-shaped tensors, and its
    gradient adds a reduction and a scale by add's alpha, where the convolution adds its bias and
    computes its gradient in its own kernels. Only this exact chain is rewritten, each link used
    once: _convolution(bias None) -> permute(0, 2, ..., 1) -> add(reshape(b, [1, ..., 1, C]), alpha 1),
    with b one-dimensional of the convolution's C output channels.
    """
    folded = 0
    for add in graph.findAllNodes("aten::add"):
        ins = list(add.inputs())
        if len(ins) != 3 or ins[2].node().kind() != "prim::Constant" or ins[2].toIValue() != 1:
            continue
        permuted, shaped = ins[:2]
        perm, reshape = permuted.node(), shaped.node()
        if (perm.kind() != "aten::permute" or reshape.kind() not in ("aten::reshape", "aten::view")
                or len(permuted.uses()) != 1 or len(shaped.uses()) != 1):
            continue
        conv_out = perm.inputsAt(0)
        conv = conv_out.node()
        if conv.kind() != "aten::_convolution" or len(conv_out.uses()) != 1:
            continue
        old_bias, bias, weight = conv.inputsAt(2), reshape.inputsAt(0), _sizes(conv.inputsAt(1))
        rank, dims, shape = len(weight or ()), _int_list(perm.inputsAt(1)), _int_list(reshape.inputsAt(1))
        if (old_bias.node().kind() != "prim::Constant" or old_bias.toIValue() is not None or not weight
                or dims != [0, *range(2, rank), 1] or shape != [1] * (rank - 1) + [weight[0]]
                or _sizes(bias) != [weight[0]]):
            continue
        if not bias.node().isBefore(conv):  # the convolution must come after its new input
            if any(not i.node().isBefore(conv) for i in bias.node().inputs()):
                continue
            bias.node().moveBefore(conv)
        conv.replaceInput(2, bias)
        add.output().replaceAllUsesWith(permuted)
        add.destroy()
        folded += 1
    torch._C._jit_pass_dce(graph)
    return folded


def pool_before_relu(graph):
    """Apply each ReLU after the max pool that follows it instead of before; return how many.

    ReLU is monotonic, so it commutes with a max: pooling first gives the same values, and the same
    gradients (ReLU's gradient at the pooled value is the one at the element the pool picked; where
    that is <= 0 both are 0), while the ReLU and its gradient touch a quarter of the elements after
    a 2x2 pool. Only the chain Keras's Conv2D(activation="relu") -> MaxPooling2D traces is rewritten,
    each link used once: relu(a) -> permute -> max_pool2d(padding 0, dilation 1).
    """
    moved = 0
    for pool in graph.findAllNodes("aten::max_pool2d"):
        pooled_in = pool.inputsAt(0)
        perm = pooled_in.node()
        if perm.kind() != "aten::permute" or len(pooled_in.uses()) != 1:
            continue
        relu_out = perm.inputsAt(0)
        relu = relu_out.node()
        if relu.kind() != "aten::relu" or len(relu_out.uses()) != 1:
            continue
        padding, dilation = _int_list(pool.inputsAt(3)), _int_list(pool.inputsAt(4))
        if padding is None or any(padding) or dilation is None or any(d != 1 for d in dilation):
            continue
        perm.replaceInput(0, relu.inputsAt(0))  # permute(relu(a)) -> permute(a)
        relu.moveAfter(pool)
        pool.output().replaceAllUsesWith(relu.output())  # the pool's users now take relu(pool)
        relu.replaceInput(0, pool.output())
        relu.output().setType(pool.output().type())
        moved += 1
    return moved


def drop_noop_casts(graph):
    """Remove `aten::to` nodes that change nothing; return how many.

    Keras's torch backend converts every layer input and weight to the compute dtype and device
    (`convert_to_tensor`); for float32 on the device they are on already, each is a call that
    returns its input, traced as a node that costs a dispatch each step. A node goes only when the
    traced types say it keeps dtype and device and it asks for no copy and no memory format.
    """
    removed = 0
    for node in graph.findAllNodes("aten::to"):
        src, out = node.inputsAt(0).type(), node.output().type()
        if not (isinstance(src, torch._C.TensorType) and isinstance(out, torch._C.TensorType)
                and src.scalarType() is not None and src.scalarType() == out.scalarType()
                and src.device() is not None and src.device() == out.device()):
            continue
        names = [a.name for a in torch._C.parse_schema(node.schema()).arguments]
        args = dict(zip(names, node.inputs(), strict=False))
        if any(args[k].node().kind() != "prim::Constant" or args[k].toIValue() not in (None, False)
               for k in ("copy", "memory_format") if k in args):
            continue
        node.output().replaceAllUsesWith(node.inputsAt(0))
        node.destroy()
        removed += 1
    torch._C._jit_pass_dce(graph)
    return removed


def drop_layout_copies(graph):
    """Remove `aten::contiguous` nodes from a traced graph; return how many.

    Keras's torch convolution and pooling make their inputs contiguous after each
    channels-last <-> channels-first permute; torch's kernels accept any strides, so those copies
    change the memory layout and nothing else (the values are the same: tested).
    """
    nodes = graph.findAllNodes("aten::contiguous")
    for node in nodes:
        node.output().replaceAllUsesWith(node.inputsAt(0))
        node.destroy()
    torch._C._jit_pass_dce(graph)
    return len(nodes)


def learning_rates(optimizer, start, count, device):
    """The learning rate of each of the optimizer steps start, ..., start + count - 1 as float32
    tensors on `device`: the Keras Variable's own tensor for a constant rate (read where it is, so an
    assignment by a callback counts), or, for a schedule, its values computed on the CPU and copied in
    one (count,) tensor: Keras's schedules branch on the step (ops.cond), which evaluated on an
    accelerator would wait for the device every step."""
    import keras

    schedule = optimizer._learning_rate
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        lr = getattr(schedule, "value", schedule)  # keras.Variable -> its torch tensor
        return [torch.as_tensor(lr, dtype=torch.float32, device=device)] * count
    with keras.device("cpu"):
        values = [float(schedule(step)) for step in range(start, start + count)]
    return torch.tensor(values, dtype=torch.float32).to(device)  # (count,)


class _KerasAdamState:
    """What both Adam updates below hold of the Keras optimizer: the weights' tensors, its own moment
    variables (so checkpoints and resuming are unchanged) and a host copy of the step count."""

    def __init__(self, optimizer, variables):
        self.opt, self.variables = optimizer, variables
        self.params = [v.value for v in variables]
        index = optimizer._get_variable_index
        self.m = [optimizer._momentums[index(v)].value for v in variables]
        self.v = [optimizer._velocities[index(v)].value for v in variables]
        self.t = int(optimizer.iterations.numpy())  # the steps taken; learning_rates starts here

    @staticmethod
    def fits(optimizer, variables):
        return plain_adam(optimizer, variables)

    def rates(self, count):
        return learning_rates(self.opt, self.t, count, self.params[0].device)


class FusedKerasAdam(_KerasAdamState):
    """Keras's Adam update, computed by torch's fused Adam kernel on the Keras optimizer's own
    moment variables: one kernel instead of Keras's per-variable update ops (docs/speed.md has what
    it gained).

    Keras: w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps). torch divides sqrt(v) by
    sqrt(1 - b2^t) before adding its eps, so eps / sqrt(1 - b2^t) gives Keras's update (tested
    against Keras to 1e-5). That eps changes every step, so this update cannot be captured in a CUDA
    graph: CompiledKerasAdam is the compiled loop's. Only for a plain Adam: no amsgrad, weight decay,
    clipping, EMA, loss scaling, accumulation or constraints; anything else goes through
    `optimizer.apply`.
    """

    def __init__(self, optimizer, variables):
        super().__init__(optimizer, variables)
        self.step_t = torch.zeros((), dtype=torch.float32, device=self.params[0].device)

    @staticmethod
    def fits(optimizer, variables):
        return hasattr(torch, "_fused_adam_") and plain_adam(optimizer, variables)

    def apply(self, grads, lr):
        """One step at rate `lr` (a float32 tensor where the weights are: learning_rates)."""
        self.t += 1
        self.step_t.fill_(self.t)
        torch._fused_adam_(self.params, grads, self.m, self.v, [], [self.step_t] * len(self.params),
                           lr=lr, beta1=self.opt.beta_1, beta2=self.opt.beta_2, weight_decay=0.0,
                           eps=self.opt.epsilon / math.sqrt(1 - self.opt.beta_2 ** self.t),
                           amsgrad=False, maximize=False)
        self.opt.iterations.value.add_(1)


def keras_adam(params, grads, m, v, iterations, lr, beta_1, beta_2, epsilon):
    """Keras's Adam step in torch's multi-tensor ops, as keras/src/backend/torch/optimizers/
    torch_adam.py computes it, the step count read from the device (no host value changes between
    steps, so a CUDA graph of it replays every step)."""
    t = iterations.to(torch.float32) + 1  # this step's count
    alpha = lr * torch.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    torch._foreach_mul_(m, beta_1)
    torch._foreach_add_(m, grads, alpha=1 - beta_1)
    torch._foreach_mul_(v, beta_2)
    torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1 - beta_2)
    torch._foreach_add_(params, torch._foreach_div(torch._foreach_mul(m, alpha),
                                                   torch._foreach_add(torch._foreach_sqrt(v), epsilon)), alpha=-1)
    iterations.add_(1)


class CompiledKerasAdam(_KerasAdamState):
    """Keras's plain Adam as one torch.compile'd program (keras_adam): the compiled loop's update,
    one CUDA graph on a GPU. The same updates as Keras's (tests/test_loops.py)."""

    def __init__(self, optimizer, variables):
        super().__init__(optimizer, variables)
        o = optimizer
        self.update = torch.compile(functools.partial(keras_adam, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon),
                                    mode=COMPILE_MODE, dynamic=False)
        self.iterations = o.iterations.value
        # What torch.optim does for a compiled step: the tensors it updates in place keep their
        # addresses, so a CUDA graph reads and writes them where they are instead of copying them in.
        for t in (*self.params, *self.m, *self.v, self.iterations):
            torch._dynamo.mark_static_address(t)

    def apply(self, grads, lr):
        self.t += 1
        self.update(self.params, grads, self.m, self.v, self.iterations, lr)


class Trainer:
    def __init__(self, model, x, y, jit_compile="auto"):
        import keras

        check_compiled(model)
        self.model = model
        self.optimizer = model.optimizer
        self.variables = model.trainable_variables
        if not self.optimizer.built:
            self.optimizer.build(self.variables)
        # Keras puts its tensors on the accelerator when there is one; the data goes there once.
        x, scale = device_images(x)
        self.x = keras.ops.convert_to_tensor(x)
        self.y = keras.ops.convert_to_tensor(y)
        self.device = self.x.device
        self.net = _LossAndHits(model, keras.losses.get(model.loss), scale)
        # --distribute data-parallel: the process group that torch/__init__.py's data_parallel made.
        # Every rank draws the same permutation (same seed) and takes its share of each batch.
        dist = torch.distributed
        self.ddp = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if self.ddp else (0, 1)
        self.compiled = compiles(jit_compile, self.device.type, self.ddp)
        self.state = [] if self.compiled else self._traced_state()
        self.steps = {}  # batch size -> traced step (a short last batch gets its own)
        self.traced = not self.compiled
        adam = CompiledKerasAdam if self.compiled else FusedKerasAdam
        self.fused = adam(self.optimizer, self.variables) if adam.fits(self.optimizer, self.variables) else None
        # One compiled program per batch shape (dynamic=False: static shapes, what CUDA graphs need).
        self._compiled_net = torch.compile(self.net, mode=COMPILE_MODE, dynamic=False) if self.compiled else None
        self._compiled_ok = False  # a whole compiled step has run: from then on an error is an error
        # Whether the compiled step should replay as CUDA graphs (reduce-overhead on a CUDA device):
        # torch skips them silently where a program cannot be captured, the step then launching
        # every kernel from the host, so run() watches the skip counter (a CPU test forces this on).
        self.graphs = self.compiled and self.device.type == "cuda"
        self.graphs_skipped = 0
        self._skips = cudagraph_skips() if self.compiled else 0

    @property
    def step_kind(self):
        """How the step runs, for metrics.json and the benchmark: after a fallback, what it fell to."""
        if self.compiled:
            how = "torch.compile" + (", CUDA graphs" if self.graphs else
                                     ", CUDA graphs skipped" if self.graphs_skipped else "")
        else:
            how = "torch.jit.trace" if self.traced else "eager"
        adam = {CompiledKerasAdam: "compiled", FusedKerasAdam: "fused kernel"}.get(type(self.fused), "Keras's")
        return f"{how}; {adam} Adam"

    def _check_graphs(self):
        """A one-line warning the first time torch skipped a CUDA graph of this step."""
        skipped = cudagraph_skips() - self._skips
        if skipped > 0:
            self.graphs, self.graphs_skipped = False, skipped
            print(f"warning: torch.compile ran this model's training step without CUDA graphs (skipped {skipped} "
                  f"time(s); TORCH_LOGS=cudagraphs prints why): every kernel is launched from the host, the "
                  f"slow path on a GPU.", file=sys.stderr)

    def _traced_state(self):
        """BatchNorm's moving statistics: Keras assigns them under no_grad, which a trace does not
        record, so the replayed graph copies a value that requires grad into them, and each would
        become a non-leaf chaining every step's graph to the next. Detached after each traced step."""
        return [v.value for v in self.model.non_trainable_variables if v.value.is_floating_point()]

    def _fall_back(self, error):
        """Whether `error`, raised by the compiled step before any compiled step completed, is
        torch.compile failing on this machine (no C++ compiler or Triton, an unsupported op): then
        the loop traces its step instead, as with jit_compile off, and says so. Running out of
        memory is not: the traced step would need the same memory."""
        if not self.compiled or self._compiled_ok or is_out_of_memory(error):
            return False
        print(f"warning: torch.compile could not compile this model's training step ({type(error).__name__}: "
              f"{brief(str(error))[:200]}); it is traced instead, as with --jit-compile off.", file=sys.stderr)
        self.compiled, self.traced, self._compiled_net, self.graphs = False, True, None, False
        self.state = self._traced_state()
        if isinstance(self.fused, CompiledKerasAdam):
            self.fused = FusedKerasAdam(self.optimizer, self.variables)
        return True

    def indices(self, array):
        """Sample indices (numpy) -> an int64 tensor on the device, in one copy."""
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

    def _step_fn(self, xb, yb):
        if self.compiled:
            return self._compiled_net
        n = xb.shape[0]
        if n not in self.steps:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    fn = torch.jit.trace(self.net, (xb, yb), check_trace=False)
                simplify_trace(fn.graph)
            except Exception as e:  # a layer tracing cannot follow: run it eagerly, still correct, and say so
                fn, self.traced = self.net, False
                print(f"warning: torch.jit.trace could not follow this model's training step ({type(e).__name__}: "
                      f"{brief(str(e))[:200]}); it runs eagerly: the same results, more host time a step.",
                      file=sys.stderr)
            if self.ddp:
                # DDP averages the gradients over the ranks during backward (its hooks on the Keras
                # variables' tensors, which the traced graph shares); made on every rank for each new
                # batch shape, in the same order, as its constructor is a collective. The Keras
                # variables that do not train (BatchNorm's statistics, seed states) are sync()'s.
                fn = torch.nn.parallel.DistributedDataParallel(fn)
            self.steps[n] = fn
        return self.steps[n]

    def run(self, batches, phases=None):
        """Train on (k, B) indices; returns (loss_sum, hits) as device scalars and the samples seen.
        With a `phases` dict, add each phase's seconds to it (profile())."""
        clock = _Clock(phases, self.device)
        seen = batches.shape[0] * batches.shape[1]
        idx = batches if torch.is_tensor(batches) else self.indices(batches)  # (k, B)
        idx = share(idx, self.rank, self.world)  # this rank's share: (k, B / world)
        params = [v.value for v in self.variables]
        rates = self.fused.rates(len(idx)) if self.fused else None
        loss_sum = torch.zeros((), device=self.device)
        hits = torch.zeros((), dtype=torch.int64, device=self.device)
        for i, b in enumerate(idx):
            xb, yb = self.x.index_select(0, b), self.y.index_select(0, b)  # (B, 28, 28, 1), (B, 10)
            for p in params:
                p.grad = None
            step = self._step_fn(xb, yb)
            if self.compiled:  # a new training step: CUDA graph outputs of the last one may be reused
                torch.compiler.cudagraph_mark_step_begin()
            clock.mark("host")
            try:
                loss, h = step(xb, yb)
                clock.mark("forward")
                loss.backward()
            except Exception as e:
                if not self._fall_back(e):
                    raise
                for p in params:
                    p.grad = None
                loss, h = self._step_fn(xb, yb)(xb, yb)
                loss.backward()
            clock.mark("backward")
            for t in self.state:
                t.detach_()
            with torch.no_grad():
                # Summed before the update runs: a CUDA graph's outputs are read before another
                # graph replays (torch.compile's CUDA graphs reuse their memory).
                loss_sum += loss.detach() * len(b)
                hits += h
                if self.fused:
                    try:
                        self.fused.apply([p.grad for p in params], rates[i])
                    except Exception as e:
                        if not self._fall_back(e):
                            raise
                        self.fused.apply([p.grad for p in params], rates[i])
                else:
                    self.optimizer.apply([p.grad for p in params], self.variables)
                self._compiled_ok = self.compiled
                clock.mark("optimizer")
        if self.graphs:
            self._check_graphs()
        if self.ddp:  # the global batch's figures, as one process would have them
            totals = torch.stack([loss_sum, hits.to(loss_sum.dtype)])
            torch.distributed.all_reduce(totals)
            loss_sum, hits = totals
        clock.mark("host")
        return loss_sum, hits, seen

    def profile(self, batches):
        """Seconds per step of each phase of run() on these (k, B) batches (it trains on them):
        forward (the traced graph), backward (autograd), optimizer, host (the batch gather, the
        bookkeeping, Python), with a clock read between phases: kernels on the CPU run
        synchronously, and a GPU is synchronized at each reading."""
        phases = dict.fromkeys(PHASES, 0.0)
        self.run(batches, phases)
        return {k: v / len(batches) for k, v in phases.items()}

    def sync(self):
        """The Keras variables are the tensors this loop updated. Under DDP the ranks' gradients,
        hence weights, agree, but BatchNorm's moving statistics are each rank's own: rank 0's go to
        every rank (what DDP's broadcast_buffers does for torch's buffers; Keras keeps them as
        parameters), so validation, early stopping and the checkpoint agree across ranks."""
        if self.ddp:
            with torch.no_grad():
                for t in self.state:
                    torch.distributed.broadcast(t, 0)
