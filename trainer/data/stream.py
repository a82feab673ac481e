"""Shards -> task samples for one data-parallel rank, with a state that saves and restores exactly.

Shards (from the manifests) are shuffled per epoch from (seed, epoch) and dealt to ranks round-robin.
Each rank walks its shards recording by recording; a window of consecutive segments of the current
recording becomes one sample of a task drawn by the configured weights; text-only samples come from
the text corpus. Everything random comes from one numpy generator whose state is part of the stream
state, with the cursors (epoch, shard, recording, segment, text document): restoring a state replays
exactly the samples that followed it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from trainer.data.tasks import (
    SegmentInput, SpecialIds, TaskSample, build_task, build_text_only, draw_task,
)

log = logging.getLogger(__name__)
MAX_SKIPPED_IN_A_ROW = 10_000  # past this, no sample can be built: stop instead of spinning


class DataError(RuntimeError):
    """The data cannot feed this run (no shards for a rank, a corrupt shard under strict mode, ...)."""


@dataclass
class StreamState:
    epoch: int = 0
    shard_pos: int = 0          # index into this rank's shard order for the epoch
    recording_pos: int = 0      # recordings of the current shard already used
    segment_pos: int = 0        # segments of the current recording already used
    text_docs: int = 0          # text-corpus documents consumed (over all epochs of the corpus)
    rng: Optional[dict] = None  # numpy bit-generator state
    skipped_shards: int = 0
    skipped_segments: int = 0   # segments too long for seq_len on their own

    def to_dict(self) -> dict:
        return asdict(self)


def rank_shards(shards: Sequence[str], rank: int, world: int, seed: int, epoch: int) -> list[str]:
    """This rank's shards for the epoch: all shards shuffled from (seed, epoch), dealt round-robin."""
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    return [sorted(shards)[i] for i in order[rank::world]]


def iter_text_corpus(paths: Sequence[str]) -> Iterator[str]:
    """Documents of jsonl (`text` field), parquet (`text` column) or plain-text files (one per line)."""
    for path in paths:
        p = Path(path)
        if p.suffix == ".jsonl":
            with p.open() as f:
                for line in f:
                    if line.strip():
                        yield json.loads(line)["text"]
        elif p.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(p).iter_batches(columns=["text"]):
                yield from batch.column(0).to_pylist()
        else:
            with p.open() as f:
                yield from (line.strip() for line in f if line.strip())


class PretrainStream:
    """Task samples for one data-parallel rank; `state()` / `load_state()` for exact resume."""

    def __init__(self, dataset: str, *, rank: int, world: int, seed: int, seq_len: int, weights: dict,
                 max_window_segments: int, enhanced_fraction: float, ids: SpecialIds,
                 encode_text: Callable[[str], list[int]], text_corpus: Sequence[str] = (), strict: bool = False,
                 instruction: str = ""):
        from pipeline.shards import DatasetLayout
        from pipeline.shards.manifest import duplicate_owners, read_manifest

        self.dataset, self.rank, self.world, self.seed = dataset, rank, world, seed
        self.seq_len, self.weights, self.max_window = seq_len, dict(weights), max_window_segments
        self.enhanced_fraction, self.ids, self.encode_text = enhanced_fraction, ids, encode_text
        self.text_corpus, self.strict = list(text_corpus), strict
        self.instruction = encode_text(instruction) if instruction else []  # the sft_asr user prompt
        layout = DatasetLayout.of(dataset)
        # once per run: which shard owns a recording a retried writer committed twice (usually none)
        self.owners = duplicate_owners(layout)
        self.shards = sorted(set(read_manifest(layout, columns=["shard"], owners=self.owners).column("shard")
                                 .to_pylist()))
        if len(self.shards) < world:
            raise DataError(f"{dataset}: {len(self.shards)} shard(s) for {world} data-parallel ranks; "
                            "every rank needs at least one (write smaller shards)")
        if self.weights.get("text_only", 0) > 0 and not self.text_corpus:
            raise DataError("tasks.text_only has weight but no text corpus is configured (data.text_corpus)")
        self.load_state(StreamState())

    # ---- state ----
    def state(self) -> StreamState:
        return StreamState(**{**asdict(self._state), "rng": self.rng.bit_generator.state})

    def load_state(self, state: StreamState) -> None:
        self._state = StreamState(**asdict(state))
        self.rng = np.random.default_rng([self.seed, self.rank])
        if state.rng is not None:
            self.rng.bit_generator.state = state.rng
        self._recordings: Optional[Iterator[list]] = None
        self._recording: Optional[list] = None
        self._texts: Optional[Iterator[str]] = None

    # ---- reading ----
    def _shard_recordings(self, shard: str) -> Iterator[list]:
        """Recordings of a shard (lists of consecutive samples), the used ones skipped."""
        from pipeline.shards.reader import iter_samples

        current: list = []
        seen = 0
        for sample in iter_samples(self.dataset, shards=[shard], audio="both", owners=self.owners):
            if current and sample.record.recording_id != current[0].record.recording_id:
                if seen >= self._state.recording_pos:
                    yield current
                seen += 1
                current = []
            current.append(sample)
        if current and seen >= self._state.recording_pos:
            yield current

    def _next_recording(self) -> list:
        s = self._state
        # shards found unreadable since the last recording: once that is every shard of the dataset, a whole
        # pass (over as many epochs as dealing takes) has yielded nothing, and nothing ever will
        unreadable: dict[str, str] = {}
        while True:
            if self._recordings is None:
                shards = rank_shards(self.shards, self.rank, self.world, self.seed, s.epoch)
                if s.shard_pos >= len(shards):
                    s.epoch, s.shard_pos, s.recording_pos = s.epoch + 1, 0, 0
                    continue
                self._recordings = self._shard_recordings(shards[s.shard_pos])
            try:
                return next(self._recordings)
            except StopIteration:
                pass
            except Exception as e:  # a corrupt or missing shard: counted, logged, skipped (fatal when strict)
                shard = rank_shards(self.shards, self.rank, self.world, self.seed, s.epoch)[s.shard_pos]
                if self.strict:
                    raise DataError(f"shard {shard} is unreadable: {e}") from e
                s.skipped_shards += 1
                if shard not in unreadable:  # once per shard, however many epochs the search takes
                    log.warning("skipping unreadable shard %s: %s", shard, e)
                unreadable[shard] = str(e)
                if len(unreadable) == len(self.shards):
                    raise DataError(f"a whole pass over all {len(self.shards)} shard(s) yielded nothing: every one "
                                    f"is unreadable (e.g. {shard}: {e})") from None
            self._recordings = None
            s.shard_pos, s.recording_pos, s.segment_pos = s.shard_pos + 1, 0, 0

    def _segment(self, sample) -> SegmentInput:
        if sample.tokens is None:
            raise DataError(f"{self.dataset}: sample {sample.key} has no semantic tokens (curate with tokenize on)")
        if len(sample.tokens) and int(sample.tokens.max()) >= self.ids.audio_vocab_size:
            raise DataError(f"{sample.key}: semantic token {int(sample.tokens.max())} is outside the model's "
                            f"{self.ids.audio_vocab_size} audio ids (a different tokenizer than the model's?)")
        use_enhanced = sample.enhanced is not None and self.rng.random() < self.enhanced_fraction
        text = sample.record.text
        return SegmentInput(np.asarray(sample.tokens, np.int64),
                            self.encode_text(text) if text else None,
                            sample.enhanced if use_enhanced else sample.audio)

    def _text_sample(self) -> TaskSample:
        if self._texts is None:
            self._texts = self._corpus_from(self._state.text_docs)
        self._state.text_docs += 1
        return build_text_only(self.encode_text(next(self._texts))[: self.seq_len - 1], self.ids)

    def _corpus_from(self, skip: int) -> Iterator[str]:
        consumed = 0
        while True:  # the corpus repeats when exhausted
            start = consumed
            for doc in iter_text_corpus(self.text_corpus):
                if consumed >= skip:
                    yield doc
                consumed += 1
            if consumed == start:
                raise DataError(f"the text corpus {self.text_corpus} holds no documents")

    def __iter__(self) -> "PretrainStream":
        return self

    def __next__(self) -> TaskSample:
        s = self._state
        skipped_in_a_row = 0
        while True:
            if self._recording is None:
                self._recording = self._next_recording()
            samples = self._recording
            has_text = all(x.record.text for x in samples[s.segment_pos:s.segment_pos + self.max_window])
            task = draw_task(self.rng, self.weights, has_text)
            if task == "text_only":
                return self._text_sample()
            window, built = [], None
            limit = 1 if task == "sft_asr" else self.max_window
            while s.segment_pos + len(window) < len(samples) and len(window) < limit:
                grown = [*window, self._segment(samples[s.segment_pos + len(window)])]
                candidate = build_task(task, grown, self.ids, self.instruction)
                if len(candidate) > self.seq_len:
                    break
                window, built = grown, candidate
            if built is None:  # its first segment alone is longer than seq_len
                s.skipped_segments += 1
                skipped_in_a_row += 1
                if skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
                    raise DataError(f"{skipped_in_a_row} segments in a row do not fit seq_len {self.seq_len} "
                                    "on their own: raise data.seq_len or curate shorter segments")
                taken = 1
            else:
                taken = len(window)
            s.segment_pos += taken
            if s.segment_pos >= len(samples):
                self._recording, s.recording_pos, s.segment_pos = None, s.recording_pos + 1, 0
            if built is not None:
                return built
