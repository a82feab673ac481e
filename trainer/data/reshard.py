"""Resuming on a different number of readers: the unused rest of the epochs in flight, dealt anew.

A reader is one data-parallel rank's loader (or one of its loader workers); there are
`data_parallel_size x max(1, num_workers)` of them, and each owns its share of every epoch's shards
(`trainer/data/stream.py`). When a run resumes with another count, every rank reads every old
reader's state from the checkpoint and computes, for each dataset, what the old readers had not yet
trained on in the epochs any of them had begun:
- the rest of each old reader's current piece (from its cursor), the rest of its queue, its later
  shards of its epoch and its whole share of every later epoch up to the newest one begun;
- the windows it had drawn but not trained on (its shuffle buffer and the sample held for the next
  row), by the origins its state names.
Those pieces, grouped by shard (one reader reads a shard's pieces in one pass) and ordered by epoch
and the epoch's shard order, are dealt round-robin to the new readers as their queues; after the
queue, every new reader starts the next epoch as a regular one. Every rank computes the same from the
same checkpoint, so no coordination is needed: over every epoch, no window is dropped or repeated.
The text corpus, dealt document by document across the old readers, is dealt across the new ones from
the furthest document any old reader had reached: none is read twice (`trainer/data/text_corpus.py`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from trainer.data.shard_order import dataset_seed, epoch_order, rank_shards, whole_shard
from trainer.data.stream import StreamState


def readers_of(rank_states: Sequence[dict]) -> list[Optional[dict]]:
    """The old readers' loader states, in reader order (rank x workers + worker), from the per-rank states."""
    readers: list[Optional[dict]] = []
    for state in rank_states:
        readers += list(state["workers"]) if "workers" in state else [state]
    return readers


def reader_count(rank_states: Sequence[dict]) -> int:
    return len(readers_of(rank_states))


def _remaining(stream: StreamState, reader: int, readers: int, shards: Sequence[str], seed: int,
               newest_epoch: int) -> list[dict]:
    """What one old reader had not reached, up to the end of `newest_epoch`."""
    pieces = []
    in_queue = stream.queue_pos < len(stream.queue)
    if in_queue:
        pieces.append({**stream.queue[stream.queue_pos], "start": [stream.recording_pos, stream.segment_pos]})
        pieces += stream.queue[stream.queue_pos + 1:]
        first_shard, cursor = 0, [0, 0]
    else:
        first_shard, cursor = stream.shard_pos, [stream.recording_pos, stream.segment_pos]
    for epoch in range(stream.epoch, newest_epoch + 1):
        for i, shard in enumerate(rank_shards(shards, reader, readers, seed, epoch)):
            if epoch == stream.epoch and i < first_shard:
                continue
            at_cursor = epoch == stream.epoch and i == first_shard
            pieces.append({**whole_shard(epoch, shard), "start": list(cursor) if at_cursor else [0, 0]})
    return [p for p in pieces if p["end"] is None or p["start"] < p["end"]]


def newest_epoch_begun(streams: Sequence[StreamState]) -> int:
    """The newest epoch any reader has begun (a reader still on its queue has not begun its regular one)."""
    return max(s.epoch - (1 if s.queue_pos < len(s.queue) else 0) for s in streams)


def deal_dataset(streams: Sequence[StreamState], waiting: Sequence[Sequence[dict]], shards: Sequence[str],
                 seed: int, new_readers: int, salt: int) -> list[StreamState]:
    """One dataset's new reader states from the old ones (`waiting`: each old reader's drawn, untrained
    windows of this dataset)."""
    newest = newest_epoch_begun(streams)
    pieces = []
    for reader, (stream, drawn) in enumerate(zip(streams, waiting)):
        pieces += _remaining(stream, reader, len(streams), shards, seed, newest)
        pieces += [{"epoch": o["epoch"], "shard": o["shard"], "start": [o["recording"], o["segments"][0]],
                    "end": [o["recording"], o["segments"][1]]} for o in drawn]
    orders: dict[int, dict[str, int]] = {}

    def group_key(piece: dict) -> tuple:
        epoch = piece["epoch"]
        if epoch not in orders:
            orders[epoch] = {shard: i for i, shard in enumerate(epoch_order(shards, seed, epoch))}
        return epoch, orders[epoch][piece["shard"]]

    groups: dict[tuple, list[dict]] = {}
    for piece in pieces:
        groups.setdefault(group_key(piece), []).append(piece)
    queues: list[list[dict]] = [[] for _ in range(new_readers)]
    for i, key in enumerate(sorted(groups)):
        queues[i % new_readers] += sorted(groups[key], key=lambda p: p["start"])
    skipped_shards = sum(s.skipped_shards for s in streams)
    skipped_segments = sum(s.skipped_segments for s in streams)
    out = []
    for reader, queue in enumerate(queues):
        start = queue[0]["start"] if queue else [0, 0]
        out.append(StreamState(epoch=newest + 1, recording_pos=start[0], segment_pos=start[1], queue=queue,
                               rng=np.random.default_rng([seed, reader, salt, 3]).bit_generator.state,
                               skipped_shards=skipped_shards if reader == 0 else 0,
                               skipped_segments=skipped_segments if reader == 0 else 0))
    return out


def reshard(rank_states: Sequence[dict], shard_lists: Sequence[Sequence[str]], seed: int, new_readers: int,
            salt: int) -> list[dict]:
    """New readers' loader states (`BatchLoader.state()` form, empty buffers) from the old ranks' states."""
    old = readers_of(rank_states)
    fresh = [StreamState().to_dict() for _ in shard_lists]
    blends = [r["stream"] if r is not None else {"rng": None, "text_docs": 0, "datasets": fresh} for r in old]
    waiting = [r["waiting_origins"] if r is not None else [] for r in old]
    per_dataset = []
    for d, shards in enumerate(shard_lists):
        streams = [StreamState(**b["datasets"][d]) for b in blends]
        drawn = [[o for o in w if o.get("dataset") == d and "keys" in o] for w in waiting]
        per_dataset.append(deal_dataset(streams, drawn, shards, dataset_seed(seed, d), new_readers, salt))
    # the text corpus was dealt across the old readers: deal it across the new ones from the furthest place any
    # old reader had reached (documents a slower one had not read yet are skipped, none is read twice)
    text_start = max(b.get("text_start", 0) + reader + b["text_docs"] * len(old) for reader, b in enumerate(blends))
    return [{"stream": {"rng": np.random.default_rng([seed, reader, salt, 2]).bit_generator.state,
                        "text_docs": 0, "text_start": text_start,
                        "datasets": [states[reader].to_dict() for states in per_dataset]},
             "buffer": [], "held": None, "shuffle_rng": None, "waiting_origins": []}
            for reader in range(new_readers)]


def rank_state(readers: Sequence[dict], dp_rank: int, num_workers: int) -> dict:
    """One rank's loader state (in-process or worker form) out of all new readers' states."""
    if num_workers == 0:
        return readers[dp_rank]
    return {"num_workers": num_workers, "consumed": 0,
            "workers": list(readers[dp_rank * num_workers:(dp_rank + 1) * num_workers])}


def resumed_loader_state(saved: Sequence[dict], saved_layout: tuple, layout: tuple, dp_rank: int,
                         shard_lists: Sequence[Sequence[str]], seed: int, salt: int) -> Optional[dict]:
    """This rank's loader state from a checkpoint's per-rank states. Layouts are (data-parallel size,
    num_workers): the same layout takes the saved state as is (bit-exact); another layout with as many
    readers takes the readers' states as they were; otherwise the epochs in flight are dealt anew."""
    dp_size, workers = layout
    if tuple(saved_layout) == tuple(layout):
        return saved[dp_rank]
    readers = readers_of(saved)
    if len(readers) != dp_size * max(1, workers):
        readers = reshard(saved, shard_lists, seed, dp_size * max(1, workers), salt)
    return rank_state(readers, dp_rank, workers)
