"""Micro-batches of packed rows for one data-parallel rank, with a state that resumes exactly.

The state is the stream's state from before the one sample held back (the sample that did not fit the
last row), so a restored loader regenerates that sample and every later one identically.
"""
from __future__ import annotations

import time

from trainer.data.packing import PackedBatch, pack_rows
from trainer.data.stream import PretrainStream, StreamState
from trainer.data.tasks import TaskSample


class BatchLoader:
    def __init__(self, stream: PretrainStream, seq_len: int, rows_per_batch: int, pad_id: int):
        self.stream, self.seq_len, self.rows_per_batch, self.pad_id = stream, seq_len, rows_per_batch, pad_id
        self._pending: list[tuple[StreamState, TaskSample]] = []
        self.wait_seconds = 0.0  # time spent producing batches (data wait of a synchronous loader)

    def state(self) -> dict:
        return (self._pending[0][0] if self._pending else self.stream.state()).to_dict()

    def skipped(self) -> tuple[int, int]:
        """(unreadable shards, segments too long for a row) skipped so far."""
        state = self.stream.state()
        return state.skipped_shards, state.skipped_segments

    def load_state(self, state: dict) -> None:
        self.stream.load_state(StreamState(**state))
        self._pending = []

    def _next_sample(self) -> tuple[StreamState, TaskSample]:
        if self._pending:
            return self._pending.pop()
        before = self.stream.state()
        return before, next(self.stream)

    def next_batch(self) -> PackedBatch:
        started = time.perf_counter()
        samples: list[TaskSample] = []
        rows, used = 1, 0
        while True:
            before, sample = self._next_sample()
            if used + len(sample) > self.seq_len:
                if rows == self.rows_per_batch:
                    self._pending.append((before, sample))
                    break
                rows, used = rows + 1, 0
            samples.append(sample)
            used += len(sample)
        batch = pack_rows(samples, self.seq_len, self.pad_id)
        self.wait_seconds += time.perf_counter() - started
        return batch
