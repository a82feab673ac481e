"""Loader worker processes: shards shared out across workers, and exact resume mid-rotation."""
import numpy as np
import pytest

from trainer.data.workers import WorkerBatchLoader
from tests.trainer.data.test_loader import loader, same


def worker_loader(inputs, **changes):
    return WorkerBatchLoader(lambda worker, n: loader(inputs, rank=worker, world=n, **changes), num_workers=2)


def test_workers_resume_exactly_where_they_stopped(training_inputs):
    uninterrupted = worker_loader(training_inputs)
    expected = [uninterrupted.next_batch() for _ in range(7)]
    first = worker_loader(training_inputs)
    for _ in range(3):  # an odd count: the resumed run must start with the second worker
        first.next_batch()
    state = first.state()
    resumed = worker_loader(training_inputs)
    resumed.load_state(state)
    assert all(same(a, b) for a, b in zip(expected[3:], (resumed.next_batch() for _ in range(4))))
    assert resumed.skipped() == (0, 0)


def test_each_worker_reads_its_own_shards(training_inputs):
    from trainer.data.shard_order import rank_shards

    shards = loader(training_inputs).stream.streams[0].shards
    parts = [rank_shards(shards, w, 2, seed=3, epoch=0) for w in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(shards)


def test_a_state_for_another_worker_count_is_refused(training_inputs):
    two = worker_loader(training_inputs)
    two.next_batch()
    three = WorkerBatchLoader(lambda w, n: loader(training_inputs, rank=w, world=n), num_workers=3)
    with pytest.raises(RuntimeError, match="2 worker"):
        three.load_state(two.state())
