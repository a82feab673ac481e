"""The loader on real shards: rank split, state round trips, corrupt shards."""
import shutil

import numpy as np
import pytest

from trainer.data.loader import BatchLoader
from trainer.data.errors import DataError
from trainer.data.shard_order import rank_shards
from trainer.data.stream import BlendStream, DatasetSpec
from trainer.data.tasks import TASKS, SpecialIds

IDS = SpecialIds(blank=500, text_eos=501, media_begin=502, media_end=503, audio_offset=512, audio_vocab_size=512)
WEIGHTS = dict(zip(TASKS, [1, 7, 1, 1, 1, 1, 2]))


def loader(inputs, dataset=None, rank=0, world=1, shuffle_buffer=4, **changes):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(inputs["text_tokenizer"])
    args = dict(rank=rank, world=world, seed=3, seq_len=160, weights=WEIGHTS, max_window_segments=3,
                enhanced_fraction=0.5, ids=IDS, encode_text=lambda t: tok.encode(t, add_special_tokens=False),
                text_corpus=[str(inputs["corpus"])])
    args.update(changes)
    datasets = dataset if isinstance(dataset, list) else [DatasetSpec(str(dataset or inputs["dataset"]))]
    return BatchLoader(BlendStream(datasets, **args), args["seq_len"], 2, pad_id=500, shuffle_buffer=shuffle_buffer)


def same(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("audio_ids", "text_ids", "audio_loss_mask",
                                                                      "text_loss_mask", "continuous"))


def test_ranks_split_the_shards_and_epochs_reshuffle():
    shards = [f"s{i}" for i in range(7)]
    parts = [rank_shards(shards, r, 3, seed=1, epoch=0) for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(shards)
    assert parts == [rank_shards(shards, r, 3, seed=1, epoch=0) for r in range(3)]
    assert parts != [rank_shards(shards, r, 3, seed=1, epoch=1) for r in range(3)]


def test_a_restored_state_replays_exactly_the_batches_that_followed(training_inputs):
    first = loader(training_inputs)
    for _ in range(3):
        first.next_batch()
    state = first.state()
    expected = [first.next_batch() for _ in range(6)]  # crosses shards and an epoch
    second = loader(training_inputs)
    second.load_state(state)
    assert all(same(a, b) for a, b in zip(expected, (second.next_batch() for _ in range(6))))
    assert first.stream.state()["datasets"][0]["epoch"] >= 1


def test_the_shuffle_buffer_reorders_samples_and_loses_none(training_inputs):
    plain, shuffled = loader(training_inputs, shuffle_buffer=1), loader(training_inputs, shuffle_buffer=6)
    key = lambda drawn: (drawn[1].task, tuple(drawn[1].audio_ids), tuple(drawn[1].text_ids))  # noqa: E731
    first = [key(plain._next_sample()) for _ in range(35)]
    mixed = [key(shuffled._next_sample()) for _ in range(30)]
    assert mixed != first[:30]
    # the stream underneath is the same: at most 5 samples wait in the buffer at any time
    assert set(first[:25]) <= set(mixed) <= set(first)


def test_batches_hold_every_task_and_both_streams(training_inputs):
    l = loader(training_inputs)
    tasks = set()
    for _ in range(12):
        b = l.next_batch()
        tasks |= {TASKS[t] for t in np.unique(b.task_ids) if t >= 0}
        assert sum(int((b.continuous[r]).sum()) for r in range(len(b.continuous))) == sum(
            (len(c) - 1) // 1280 + 1 for c in b.clips)  # one feature row per continuous position
    assert tasks == set(WEIGHTS)  # the seven pretraining tasks


def test_a_corrupt_shard_is_skipped_and_counted_or_fatal_when_strict(training_inputs, tmp_path):
    dataset = shutil.copytree(training_inputs["dataset"], tmp_path / "ds")
    victim = sorted((dataset / "shards").glob("*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[:3000])
    lenient = loader(training_inputs, dataset)
    for _ in range(8):
        lenient.next_batch()
    assert lenient.skipped()[0] >= 1
    strict = loader(training_inputs, dataset, strict=True)
    with pytest.raises(DataError, match="unreadable"):
        for _ in range(8):
            strict.next_batch()


def test_more_ranks_than_shards_is_refused(training_inputs):
    with pytest.raises(DataError, match="every reader needs at least one"):
        loader(training_inputs, rank=0, world=50)


def test_tokens_outside_the_models_audio_range_are_a_clear_error(training_inputs):
    from dataclasses import replace

    narrow = loader(training_inputs)
    narrow.stream.streams[0].ids = replace(IDS, audio_vocab_size=4)
    with pytest.raises(DataError, match="outside the model's 4 audio ids"):
        for _ in range(4):
            narrow.next_batch()


def test_segments_too_long_for_any_row_are_a_clear_error_not_a_spin(training_inputs, monkeypatch):
    from trainer.data import stream

    monkeypatch.setattr(stream, "MAX_SKIPPED_IN_A_ROW", 20)
    tiny_rows = loader(training_inputs, seq_len=3, weights={"audio_only": 1})
    with pytest.raises(DataError, match="do not fit seq_len 3"):
        tiny_rows.next_batch()
