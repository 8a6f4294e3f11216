"""Batches for training and evaluation, deterministic and multi-host aware.

Training: the order of epoch e is ``default_rng([seed, e]).permutation(N)``; global batch b of
that epoch is ``perm[b*G:(b+1)*G]`` (the remainder is dropped), and process p of P takes rows
``[p*G/P, (p+1)*G/P)`` of it. A batch is a pure function of (seed, step), so a run resumed at
step s sees exactly the batches an uninterrupted run would, with no iterator state to save.

Evaluation: every example exactly once, in order, in global batches of G; the last one is
padded (with copies of example 0) and carries ``mask`` 0 on the padding.
"""

import queue
import threading

import numpy as np


class TrainBatches:
    def __init__(
        self,
        source,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        _check_divisible(global_batch_size, process_count)
        if len(source) < global_batch_size:
            raise ValueError(
                f"the dataset has {len(source)} examples, fewer than one global "
                f"batch of {global_batch_size}"
            )
        self.source = source
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed = seed
        self.process_index = process_index
        self.steps_per_epoch = len(source) // global_batch_size
        self._perm_cache = (None, None)

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_cache[0] != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
            self._perm_cache = (epoch, perm)
        return self._perm_cache[1]

    def indices(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        start = b * self.global_batch_size + self.process_index * self.local_batch_size
        return perm[start : start + self.local_batch_size]

    def batch(self, step: int) -> dict:
        images, labels = self.source.gather(self.indices(step))
        return {"image": images, "label": labels}

    def iterate(self, start_step: int, num_steps: int, prefetch: int = 2):
        """Batches for steps start_step..num_steps-1, prepared ``prefetch`` ahead in a thread."""
        return _prefetch((self.batch(s) for s in range(start_step, num_steps)), prefetch)


class EvalBatches:
    def __init__(
        self, source, global_batch_size: int, process_index: int = 0, process_count: int = 1
    ):
        _check_divisible(global_batch_size, process_count)
        self.source = source
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.process_index = process_index
        self.num_batches = -(-len(source) // global_batch_size)

    def batch(self, b: int) -> dict:
        n = len(self.source)
        start = b * self.global_batch_size + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        mask = positions < n
        images, labels = self.source.gather(np.where(mask, positions, 0))
        return {"image": images, "label": labels, "mask": mask.astype(np.float32)}

    def __iter__(self):
        return _prefetch((self.batch(b) for b in range(self.num_batches)), 2)

    def __len__(self):
        return self.num_batches


def _check_divisible(global_batch_size: int, process_count: int) -> None:
    if global_batch_size % process_count:
        raise ValueError(
            f"global batch {global_batch_size} is not divisible by the {process_count} processes"
        )


def _prefetch(iterator, size: int):
    """Run ``iterator`` in a background thread, ``size`` items ahead; re-raise its errors."""
    if size <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)
        q.put(sentinel)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
