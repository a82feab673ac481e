"""Micro-batches of packed rows for one data-parallel rank (or loader worker), resumable exactly.

Samples pass through a shuffle buffer: a random one of the last `shuffle_buffer` samples goes next.
The state does not hold the buffered samples (they carry audio); it holds the stream state from before
each of them was drawn, and a restored loader regenerates each one from its state (the stream is
deterministic given its state). The same goes for the one sample held back because it did not fit the
last row. So a restored loader yields exactly the batches that followed the saved one. The state also
names the origins of those samples: drawn but not trained on, they are work a resume on a different
number of readers deals out again (`trainer/data/reshard.py`).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from trainer.data.packing import PackedBatch, pack_rows
from trainer.data.stream import BlendStream
from trainer.data.tasks import TaskSample

Drawn = tuple[dict, TaskSample]  # a sample and the stream state it was drawn from


class BatchLoader:
    def __init__(self, stream: BlendStream, seq_len: int, rows_per_batch: int, pad_id: int,
                 shuffle_buffer: int = 1):
        self.stream, self.seq_len, self.rows_per_batch, self.pad_id = stream, seq_len, rows_per_batch, pad_id
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.rng = np.random.default_rng([stream.seed, stream.rank, 1])
        self._buffer: list[Drawn] = []
        self._held: Optional[Drawn] = None
        self.wait_seconds = 0.0  # time spent producing batches (data wait of an in-process loader)

    def _draw(self) -> Drawn:
        before = self.stream.state()
        return before, next(self.stream)

    def _regenerate(self, state: dict) -> Drawn:
        self.stream.load_state(state)
        return self._draw()

    def state(self) -> dict:
        waiting = [*self._buffer, *([self._held] if self._held else [])]
        return {"stream": self.stream.state(), "buffer": [s for s, _ in self._buffer],
                "held": None if self._held is None else self._held[0],
                "shuffle_rng": self.rng.bit_generator.state,
                "waiting_origins": [sample.origin for _, sample in waiting]}

    def load_state(self, state: Optional[dict]) -> None:
        if state is None:  # a reader of another layout that had not delivered a batch: start afresh
            return
        self._buffer = [self._regenerate(s) for s in state["buffer"]]
        self._held = None if state["held"] is None else self._regenerate(state["held"])
        self.stream.load_state(state["stream"])
        if state["shuffle_rng"] is not None:  # None: a state dealt at a resume on another reader count
            self.rng.bit_generator.state = state["shuffle_rng"]

    def skipped(self) -> tuple[int, int]:
        """(unreadable shards, segments too long for a row) skipped so far."""
        return self.stream.skipped()

    def _next_sample(self) -> Drawn:
        if self._held is not None:
            drawn, self._held = self._held, None
            return drawn
        while len(self._buffer) < self.shuffle_buffer:
            self._buffer.append(self._draw())
        pick = int(self.rng.integers(len(self._buffer)))
        self._buffer[pick], self._buffer[-1] = self._buffer[-1], self._buffer[pick]
        return self._buffer.pop()

    def next_batch(self) -> PackedBatch:
        started = time.perf_counter()
        samples: list[TaskSample] = []
        rows, used = 1, 0
        while True:
            drawn = self._next_sample()
            sample = drawn[1]
            if used + len(sample) > self.seq_len:
                if rows == self.rows_per_batch:
                    self._held = drawn
                    break
                rows, used = rows + 1, 0
            samples.append(sample)
            used += len(sample)
        batch = pack_rows(samples, self.seq_len, self.pad_id)
        self.wait_seconds += time.perf_counter() - started
        return batch
