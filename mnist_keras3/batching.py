"""Dynamic batching for the web app: predictions that arrive together share one model call.

Predictor queues requests and runs one batch at a time on a model thread of its own; Job is one
prediction through it (the web app's Prediction fills in how a request is prepared and answered).
"""

import asyncio
import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BATCH_SHAPE = (1, 28, 28, 1)  # an MNIST model's; each model's own comes from its record


class Predictor:
    """The model behind dynamic batching: predictions that arrive together go through one model call.

    Requests queue here (`await predictor.predict(image)`); one batch at a time runs on a model
    thread of its own, so the event loop (and GET /api/health) never waits on the model. A batch
    closes when it holds `max_batch` images, when no other request is still being read and
    preprocessed (waiting would gain nothing), or `window_ms` after its first image arrived,
    whichever comes first: TF Serving's batch_timeout_micros and Triton's max_queue_delay, made
    adaptive so that a lone client pays no window. A batch is padded with zeros to the next size in
    `buckets` (1, 2, 4, ... max_batch), so the model only ever sees those few shapes, each compiled
    (jax, tensorflow) or run once at start-up, never on a user's request.
    """

    def __init__(self, model, input_shape=BATCH_SHAPE[1:], max_batch=32, window_ms=2.0):
        if max_batch < 1 or window_ms < 0:
            raise ValueError(f"Expected max_batch >= 1 and window_ms >= 0. Received: max_batch={max_batch}, "
                             f"window_ms={window_ms}")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.batch_shape = (1, *self.input_shape)
        self.max_batch, self.window = max_batch, window_ms / 1000
        self.buckets = tuple(sorted({min(2 ** k, max_batch) for k in range(max_batch.bit_length() + 1)}))
        self.lock = threading.Lock()  # the model thread and direct callers: one inference at a time
        # One thread: batches run one after another; a batch is the unit of parallel work.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.queue = collections.deque()  # (image, future) waiting for the next batch
        self.preparing = 0  # requests being read or preprocessed: they may join the next batch
        self.wake = None  # asyncio.Event of the running loop, made on first use
        self.worker = None
        self.batches = collections.Counter()  # batch size -> model calls, for /api/model and the load test
        for size in self.buckets:  # compile/trace every shape now, not on the first users
            self.run_batch(np.zeros((size, *self.input_shape), dtype=np.float32))

    def run_batch(self, images):
        """float32 (N, H, W, C) -> float64 (N, K) probabilities, through the smallest bucket >= N."""
        n = len(images)
        size = next(b for b in self.buckets if b >= n)
        batch = np.zeros((size, *self.input_shape), dtype=np.float32)
        batch[:n] = images
        with self.lock:
            # predict_on_batch: no per-call dataset/progress-bar machinery, unlike model.predict;
            # for small batches it is as fast as model(x) or a hand-jitted call under jax and
            # tensorflow, and faster than model(x) under no_grad under torch.
            out = self.model.predict_on_batch(batch)  # (size, K)
        return np.asarray(out, dtype=np.float64)[:n]

    def probabilities(self, image):
        """float32 (H, W, C) -> float64 (K,) class probabilities, now, in the calling thread."""
        return self.run_batch(np.asarray(image, dtype=np.float32)[None])[0]

    def run_jobs(self, jobs):
        """On the model thread: prepare the jobs not yet prepared, one model call for those that
        prepared, then each one's answer. -> [(True, answer) or (False, exception)] in order."""
        outcomes = [None] * len(jobs)
        ready = []
        for i, job in enumerate(jobs):
            if job.array is None:
                try:
                    job.prepare()
                except Exception as e:  # the request's own fault (a 4xx), or a bug (a 500)
                    outcomes[i] = (False, e)
                    continue
            ready.append(i)
        if ready:
            probs = self.run_batch(np.stack([jobs[i].array for i in ready]))
            self.batches[len(ready)] += 1
            for i, p in zip(ready, probs, strict=True):
                try:
                    outcomes[i] = (True, jobs[i].answer(p, len(ready)))
                except Exception as e:
                    outcomes[i] = (False, e)
        return outcomes

    def preparing_started(self):
        self.preparing += 1

    def preparing_ended(self):
        """A request being prepared has queued its image or failed: the batch may close sooner."""
        self.preparing -= 1
        if self.worker is not None and self.worker.get_loop() is asyncio.get_running_loop():
            self.wake.set()

    async def predict(self, image, was_preparing=False):
        """float32 (H, W, C) -> (float64 (K,) probabilities, size of the batch it went in), once its
        batch ran. was_preparing: the caller counted itself in with preparing_started()."""
        return await self.submit(Job(array=image), was_preparing)

    async def submit(self, job, was_preparing=False):
        """A Job -> what its answer() returns, once its batch ran (its prepare() too, if its array
        is None: on the model thread, with the rest of the batch)."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done() or self.worker.get_loop() is not loop:
            # The first request on this event loop (a test client may bring a new one): its batcher.
            self.wake = asyncio.Event()
            self.worker = loop.create_task(self._batches())
        future = loop.create_future()
        self.queue.append((job, future))  # queued before it stops counting as preparing
        if was_preparing:
            self.preparing -= 1
        self.wake.set()
        return await future

    async def _batches(self):
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                continue
            deadline = loop.time() + self.window
            while len(self.queue) < self.max_batch and self.preparing > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except TimeoutError:
                    break
                self.wake.clear()
            taken = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
            try:
                outcomes = await loop.run_in_executor(self.executor, self.run_jobs, [job for job, _ in taken])
            except Exception as e:  # a failed model call fails its requests (a 500), not the batcher
                for _, future in taken:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                if self.queue:
                    self.wake.set()  # requests that came in during the call: the next batch
            for (_, future), (ok, value) in zip(taken, outcomes, strict=True):
                if not future.done():  # a client that went away cancelled its future
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)


class Job:
    """One prediction through the Predictor: `array` (the model input) when prepared already, or
    None and prepare() sets it on the model thread; answer(probabilities, batch size) is what the
    caller gets back, also made on the model thread."""

    array = None

    def __init__(self, array=None):
        if array is not None:
            self.array = array

    def prepare(self):
        raise NotImplementedError

    def answer(self, probabilities, batch):
        return probabilities, batch
