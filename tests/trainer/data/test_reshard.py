"""Blends and resuming on another reader count, on real shards: draws follow the weights, and over every
epoch each segment is trained on exactly once whatever the reader counts before and after; no text document
is read twice."""
import shutil
from collections import Counter

import pytest

from pipeline.shards import DatasetLayout
from pipeline.shards.manifest import read_manifest
from trainer.data.reshard import reshard
from trainer.data.shard_order import dataset_shards
from trainer.data.stream import DatasetSpec
from tests.trainer.data.test_loader import loader, same


def all_keys(dataset) -> list[str]:
    return read_manifest(DatasetLayout.of(str(dataset)), columns=["key"]).column("key").to_pylist()


def consume(loaders, batches_each, trained, texts=None):
    """Batches from each reader in turn; `trained` collects (dataset, epoch, key) of every segment, `texts` the
    places in the text corpus (read endlessly) of the text-only samples."""
    for _ in range(batches_each):
        for reader in loaders:
            for origin in reader.next_batch().origins:
                trained += [(origin["dataset"], origin["epoch"], key) for key in origin.get("keys", [])]
                if texts is not None and "text_doc" in origin:
                    texts.append(origin["text_doc"])


def settled_epochs(reader, dataset=0) -> int:
    """Epochs below this one are over for the reader: none of its samples waits in the buffer."""
    state = reader.state()
    waiting = [o["epoch"] for o in state["waiting_origins"] if o["dataset"] == dataset and "epoch" in o]
    return min([state["stream"]["datasets"][dataset]["epoch"], *waiting])


def resharded(inputs, loaders, readers, salt, datasets=None):
    shards = [dataset_shards(spec.url)[1] for spec in datasets] if datasets else [
        dataset_shards(str(inputs["dataset"]))[1]]
    states = reshard([reader.state() for reader in loaders], shards, seed=3, new_readers=readers, salt=salt)
    out = []
    for rank, state in enumerate(states):
        reader = loader(inputs, datasets, rank=rank, world=readers)
        reader.load_state(state)
        out.append(reader)
    return out


def test_two_readers_to_three_to_one_train_every_segment_once_per_epoch(training_inputs):
    trained: list = []
    texts: list = []
    two = [loader(training_inputs, rank=r, world=2) for r in range(2)]
    consume(two, 3, trained, texts)
    three = resharded(training_inputs, two, 3, salt=1)
    consume(three, 1, trained, texts)  # still on the queues when they are dealt again
    assert any(r.stream.state()["datasets"][0]["queue"] for r in three)
    one = resharded(training_inputs, three, 1, salt=2)
    consume(one, 25, trained, texts)
    assert len(texts) > 10 and len(set(texts)) == len(texts)  # dealt across readers, before and after each reshard
    finished = settled_epochs(one[0])
    assert finished >= 2  # epochs 0 and 1 were in flight across both reshards
    keys = sorted(all_keys(training_inputs["dataset"]))
    for epoch in range(finished):
        got = Counter(key for _, e, key in trained if e == epoch)
        assert sorted(got) == keys and set(got.values()) == {1}, (epoch, got)


def test_the_same_reader_count_still_resumes_bit_exactly(training_inputs):
    # a reshard only happens when the count changes; the states of a same-count resume are the saved ones
    first = loader(training_inputs, rank=1, world=2)
    for _ in range(3):
        first.next_batch()
    state = first.state()
    expected = [first.next_batch() for _ in range(4)]
    again = loader(training_inputs, rank=1, world=2)
    again.load_state(state)
    assert all(same(a, b) for a, b in zip(expected, (again.next_batch() for _ in range(4))))


@pytest.fixture
def blend(training_inputs, tmp_path):
    """The training dataset and a copy of it, weighted 3:1."""
    copy = shutil.copytree(training_inputs["dataset"], tmp_path / "podcasts")
    return [DatasetSpec(str(training_inputs["dataset"]), 3.0, "books"), DatasetSpec(str(copy), 1.0, "podcasts")]


def test_a_blend_draws_by_weight_and_a_resumed_run_continues_the_same_draw(training_inputs, blend):
    reader = loader(training_inputs, blend, shuffle_buffer=1)
    draws = [reader.stream.__next__().origin["dataset"] for _ in range(800)]
    # each draw picks dataset 0 with p = 0.75, independently: the fraction's standard deviation over 800
    # draws is sqrt(0.75 x 0.25 / 800) = 0.015; 4 of them (0.06) is missed by chance about once in 16,000 runs
    assert abs(draws.count(0) / len(draws) - 0.75) < 0.06, draws.count(0)
    state = reader.state()
    expected = [reader.next_batch() for _ in range(4)]
    resumed = loader(training_inputs, blend, shuffle_buffer=1)
    resumed.load_state(state)
    got = [resumed.next_batch() for _ in range(4)]
    assert [o["dataset"] for b in got for o in b.origins] == [o["dataset"] for b in expected for o in b.origins]
    assert all(same(a, b) for a, b in zip(expected, got))


def test_a_blend_reshards_each_dataset_on_its_own(training_inputs, blend):
    trained: list = []
    two = [loader(training_inputs, blend, rank=r, world=2) for r in range(2)]
    consume(two, 3, trained)
    one = resharded(training_inputs, two, 1, salt=1, datasets=blend)
    consume(one, 40, trained)
    keys = sorted(all_keys(training_inputs["dataset"]))
    for d in (0, 1):
        epochs = settled_epochs(one[0], d)
        assert epochs >= 1
        for epoch in range(epochs):
            got = Counter(key for ds, e, key in trained if ds == d and e == epoch)
            assert sorted(got) == keys and set(got.values()) == {1}, (d, epoch, got)
