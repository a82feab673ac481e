"""Loader worker processes: each worker owns a share of the rank's shards and its own loader state.

Worker w of data-parallel rank r reads as virtual rank `r * W + w` of `dp_size * W`, so shards are dealt
across ranks and workers alike. torch's DataLoader hands out the workers' batches in round-robin order;
every batch carries its worker's loader state, and the state of the last batch taken from each worker
is the resume point. A resumed loader rotates which worker comes first so the order continues where it
stopped: the batches after a resume are exactly those the uninterrupted run would have seen.
"""
from __future__ import annotations

import signal
import time
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer.data.loader import BatchLoader
from trainer.data.packing import PackedBatch


def _ignore_sigterm(worker_id: int) -> None:
    # torchrun signals the whole process group; the training process decides when to stop (after saving),
    # and its workers end with it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _WorkerBatches(IterableDataset):
    def __init__(self, make_loader: Callable[[int, int], BatchLoader], num_workers: int,
                 states: list[Optional[dict]], rotation: int):
        self.make_loader, self.num_workers, self.states, self.rotation = make_loader, num_workers, states, rotation

    def __iter__(self):
        torch.set_num_threads(1)  # decoding parallelism comes from the workers themselves
        worker = (get_worker_info().id + self.rotation) % self.num_workers
        loader = self.make_loader(worker, self.num_workers)
        if self.states[worker] is not None:
            loader.load_state(self.states[worker])
        while True:
            batch = loader.next_batch()
            yield worker, batch, loader.state()


class WorkerBatchLoader:
    """`BatchLoader`'s interface (next_batch, state, load_state, wait_seconds) over worker processes.

    `make_loader(worker, num_workers)` builds the in-process loader of one worker."""

    def __init__(self, make_loader: Callable[[int, int], BatchLoader], num_workers: int, prefetch: int = 2):
        self.make_loader, self.num_workers, self.prefetch = make_loader, num_workers, prefetch
        self.states: list[Optional[dict]] = [None] * num_workers
        self.consumed = 0
        self.wait_seconds = 0.0  # time the training loop waited for a batch
        self._batches = None

    def _start(self) -> None:
        dataset = _WorkerBatches(self.make_loader, self.num_workers, list(self.states), self.consumed % self.num_workers)
        self._batches = iter(DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                                        prefetch_factor=self.prefetch, collate_fn=lambda item: item,
                                        worker_init_fn=_ignore_sigterm))

    def next_batch(self) -> PackedBatch:
        started = time.perf_counter()
        if self._batches is None:
            self._start()
        worker, batch, state = next(self._batches)
        self.states[worker] = state
        self.consumed += 1
        self.wait_seconds += time.perf_counter() - started
        return batch

    def skipped(self) -> tuple[int, int]:
        """(unreadable shards, segments too long for a row) skipped so far, over all workers."""
        streams = [d for s in self.states if s is not None for d in s["stream"]["datasets"]]
        return sum(d["skipped_shards"] for d in streams), sum(d["skipped_segments"] for d in streams)

    def state(self) -> dict:
        return {"num_workers": self.num_workers, "consumed": self.consumed, "workers": list(self.states)}

    def load_state(self, state: dict) -> None:
        if state.get("num_workers") != self.num_workers:
            raise RuntimeError(f"the loader state is for {state.get('num_workers')} worker(s), this run has "
                               f"{self.num_workers}: each worker's shard cursors belong to its own share of the "
                               "shards; resume with the same data.num_workers")
        self.states, self.consumed, self._batches = list(state["workers"]), state["consumed"], None
