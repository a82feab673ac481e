"""Shards -> task samples for one reader (a data-parallel rank or one of its loader workers), with a
state that saves and restores exactly.

A reader works through *pieces*: a piece is a shard of a dataset, or a part of one, from a position
(recording, segment) to an end (exclusive; None: the end of the shard). In a regular epoch, a
dataset's shards are shuffled from (seed, epoch) and dealt to the readers round-robin, one whole-shard
piece each. After a resume on a different number of readers (`trainer/data/reshard.py`), a reader
first works the queue of pieces it was dealt, the unused rest of the epochs in flight, and then
continues with regular epochs. A window of consecutive segments of the current recording becomes one
sample of a task drawn by the configured weights; text-only samples come from the text corpus. A prepared
conversation (jobs.prepare_sft) is a recording of one sample and becomes one sample of its own task
(sft_understanding or sft_speech2speech, skipped when that task has no weight); sft_asr's instruction is
drawn from the instruction pool when one is given. Every
sample carries its origin (dataset, epoch, shard, recording, segment range, keys), which is what a
resume on another reader count deals out again when the sample was drawn but not yet trained on.

Everything random comes from numpy generators whose states are part of the stream state, with the
cursors: restoring a state replays exactly the samples that followed it. `BlendStream` draws each
sample from one of several datasets by weight; a single dataset is the one-entry blend. Which shards a
reader deals itself is `shard_order.py`; the text corpus is `text_corpus.py`; the layouts are `tasks.py`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from trainer.data.errors import DataError
from trainer.data.shard_order import dataset_seed, dataset_shards, rank_shards, whole_shard
from trainer.data.tasks import (
    ConversationTurn, SegmentInput, SpecialIds, TaskSample, build_conversation, build_task, build_text_only, draw_task,
)
from trainer.data.text_corpus import TextDocuments

log = logging.getLogger(__name__)
MAX_SKIPPED_IN_A_ROW = 10_000  # past this, no sample can be built: stop instead of spinning


@dataclass
class StreamState:
    """A reader's cursors in one dataset. `recording_pos` / `segment_pos` are absolute positions in the
    current piece's shard: the recording (by index in the shard) and its segments already used."""
    epoch: int = 0              # the regular epoch (worked after the queue)
    shard_pos: int = 0          # index into this reader's shards of `epoch`
    recording_pos: int = 0
    segment_pos: int = 0
    queue: list = field(default_factory=list)  # pieces dealt at a resume on another reader count
    queue_pos: int = 0
    rng: Optional[dict] = None  # numpy bit-generator state
    skipped_shards: int = 0
    skipped_segments: int = 0   # segments too long for seq_len on their own

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Recording:
    piece: dict
    index: int
    samples: list
    end: int  # segments of this recording the piece covers: [segment_pos, end)


class PretrainStream:
    """Task samples of one dataset for one reader; `state()` / `load_state()` for exact resume."""

    def __init__(self, dataset: str, *, rank: int, world: int, seed: int, seq_len: int, weights: dict,
                 max_window_segments: int, enhanced_fraction: float, ids: SpecialIds,
                 encode_text: Callable[[str], list[int]], texts: Optional[TextDocuments] = None,
                 strict: bool = False, instruction: str = "", shards: Optional[Sequence[str]] = None,
                 owners: Optional[dict] = None, instructions: Sequence[str] = ()):
        self.dataset, self.rank, self.world, self.seed = dataset, rank, world, seed
        self.seq_len, self.weights, self.max_window = seq_len, dict(weights), max_window_segments
        self.enhanced_fraction, self.ids, self.encode_text = enhanced_fraction, ids, encode_text
        self.texts, self.strict = texts, strict
        self.instruction = encode_text(instruction) if instruction else []  # the sft_asr user prompt
        self.instructions = [encode_text(text) for text in instructions]  # a pool to draw it from instead
        if shards is None:
            owners, shards = dataset_shards(dataset)
        self.owners, self.shards = owners, sorted(shards)
        if len(self.shards) < world:
            raise DataError(f"{dataset}: {len(self.shards)} shard(s) for {world} readers (data-parallel ranks x "
                            "loader workers); every reader needs at least one (write smaller shards)")
        if self.weights.get("text_only", 0) > 0 and texts is None:
            raise DataError("tasks.text_only has weight but no text corpus is configured (data.text_corpus)")
        self._reader = None  # (shard, iterator of (index, samples), last (index, samples)): shared by pieces
        self.load_state(StreamState())

    # ---- state ----
    def state(self) -> StreamState:
        return StreamState(**{**asdict(self._state), "rng": self.rng.bit_generator.state})

    def load_state(self, state: StreamState) -> None:
        self._state = StreamState(**asdict(state))
        self.rng = np.random.default_rng([self.seed, self.rank])
        if state.rng is not None:
            self.rng.bit_generator.state = state.rng
        self._recording: Optional[_Recording] = None

    # ---- pieces ----
    def _piece(self) -> dict:
        s = self._state
        if s.queue_pos < len(s.queue):
            return s.queue[s.queue_pos]
        shards = rank_shards(self.shards, self.rank, self.world, self.seed, s.epoch)
        return whole_shard(s.epoch, shards[s.shard_pos])

    def _advance(self) -> None:
        """On to the next piece, the cursor at its start."""
        s = self._state
        if s.queue_pos < len(s.queue):
            s.queue_pos += 1
            if s.queue_pos == len(s.queue):
                s.queue, s.queue_pos = [], 0
        else:
            s.shard_pos += 1
            if s.shard_pos >= len(rank_shards(self.shards, self.rank, self.world, self.seed, s.epoch)):
                s.epoch, s.shard_pos = s.epoch + 1, 0
        s.recording_pos, s.segment_pos = self._piece()["start"]

    def _recording_at(self, shard: str, index: int) -> Optional[tuple[int, list]]:
        """Recording `index` of a shard (a list of consecutive samples), None past its last; reading goes on
        from where the previous call stopped when it can (the pieces of one shard come in order)."""
        if self._reader is None or self._reader[0] != shard or self._reader[2][0] > index:
            self._reader = [shard, self._shard_recordings(shard), (-1, [])]
        while self._reader[2][0] < index:
            got = next(self._reader[1], None)
            if got is None:
                self._reader = None
                return None
            self._reader[2] = got
        return self._reader[2]

    def _shard_recordings(self, shard: str) -> Iterator[tuple[int, list]]:
        from pipeline.shards.reader import iter_samples

        current: list = []
        index = 0
        for sample in iter_samples(self.dataset, shards=[shard], audio="both", owners=self.owners):
            if current and sample.record.recording_id != current[0].record.recording_id:
                yield index, current
                index, current = index + 1, []
            current.append(sample)
        if current:
            yield index, current

    def _next_recording(self) -> _Recording:
        s = self._state
        # shards found unreadable since the last recording: once that is every shard of the dataset, a whole
        # pass (over as many epochs as dealing takes) has yielded nothing, and nothing ever will
        unreadable: dict[str, str] = {}
        while True:
            piece = self._piece()
            end = piece["end"]
            if end is not None and [s.recording_pos, s.segment_pos] >= end:
                self._advance()
                continue
            try:
                got = self._recording_at(piece["shard"], s.recording_pos)
            except Exception as e:  # a corrupt or missing shard: counted, logged, skipped (fatal when strict)
                self._reader = None
                shard = piece["shard"]
                if self.strict:
                    raise DataError(f"shard {shard} is unreadable: {e}") from e
                s.skipped_shards += 1
                if shard not in unreadable:  # once per shard, however many epochs the search takes
                    log.warning("skipping unreadable shard %s: %s", shard, e)
                unreadable[shard] = str(e)
                if len(unreadable) == len(self.shards):
                    raise DataError(f"a whole pass over all {len(self.shards)} shard(s) yielded nothing: every one "
                                    f"is unreadable (e.g. {shard}: {e})") from None
                self._advance()
                continue
            if got is None:  # the shard ends here
                self._advance()
                continue
            index, samples = got
            stop = end[1] if end is not None and end[0] == index else len(samples)
            if s.segment_pos >= stop:
                s.recording_pos, s.segment_pos = s.recording_pos + 1, 0
                continue
            return _Recording(piece, index, samples, stop)

    # ---- samples ----
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
        doc = self.texts.position
        sample = build_text_only(self.encode_text(self.texts.next())[: self.seq_len - 1], self.ids)
        sample.origin = {"text_doc": doc}
        return sample

    def __iter__(self) -> "PretrainStream":
        return self

    def _conversation(self, sample) -> Optional[TaskSample]:
        """A prepared conversation's sample; None when its task has no weight or it does not fit seq_len."""
        conversation = sample.record.conversation
        task = f"sft_{conversation.task_type}"
        if self.weights.get(task, 0) <= 0:
            return None
        if sample.tokens is None:
            raise DataError(f"{self.dataset}: conversation {sample.key} has no semantic tokens")
        turns = []
        for m in conversation.messages:
            semantic = audio = None
            if m.has_audio:
                semantic = np.asarray(sample.tokens[m.first_token:m.first_token + m.num_tokens], np.int64)
                audio = sample.audio[m.first_sample:m.first_sample + m.num_samples]
            turns.append(ConversationTurn(m.role, self.encode_text(m.text) if m.has_text else None, semantic, audio))
        built = build_conversation(conversation.task_type, turns, self.ids)
        return built if len(built) <= self.seq_len else None

    def __next__(self) -> TaskSample:
        s = self._state
        skipped_in_a_row = 0
        while True:
            if self._recording is None:
                self._recording = self._next_recording()
            rec = self._recording
            samples, first = rec.samples, s.segment_pos
            if getattr(samples[first].record, "conversation", None) is not None:
                built = self._conversation(samples[first])
                s.segment_pos += 1
                if s.segment_pos >= rec.end:
                    self._recording, s.recording_pos, s.segment_pos = None, s.recording_pos + 1, 0
                if built is None:
                    s.skipped_segments += 1
                    skipped_in_a_row += 1
                    if skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
                        raise DataError(f"{skipped_in_a_row} conversations in a row have no task weight or do not "
                                        f"fit seq_len {self.seq_len}: check tasks.sft_* and data.seq_len")
                    continue
                built.origin = {"epoch": rec.piece["epoch"], "shard": rec.piece["shard"], "recording": rec.index,
                                "segments": [first, first + 1], "keys": [samples[first].key],
                                "seconds": samples[first].record.end - samples[first].record.start}
                return built
            has_text = all(x.record.text for x in samples[first:min(rec.end, first + self.max_window)])
            task = draw_task(self.rng, self.weights, has_text)
            if task == "text_only":
                return self._text_sample()
            window, built = [], None
            limit = 1 if task == "sft_asr" else self.max_window
            instruction = self.instruction
            if task == "sft_asr" and self.instructions:
                instruction = self.instructions[int(self.rng.integers(len(self.instructions)))]
            while first + len(window) < rec.end and len(window) < limit:
                grown = [*window, self._segment(samples[first + len(window)])]
                candidate = build_task(task, grown, self.ids, instruction)
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
            if s.segment_pos >= rec.end:
                self._recording, s.recording_pos, s.segment_pos = None, s.recording_pos + 1, 0
            if built is not None:
                used = samples[first:first + taken]
                built.origin = {"epoch": rec.piece["epoch"], "shard": rec.piece["shard"], "recording": rec.index,
                                "segments": [first, first + taken], "keys": [x.key for x in used],
                                "seconds": sum(x.record.end - x.record.start for x in used)}
                return built


@dataclass(frozen=True)
class DatasetSpec:
    url: str
    weight: float = 1.0
    name: str = ""


class BlendStream:
    """Samples drawn from several datasets by weight (deterministically from the seed); the task weights
    apply within each dataset, and text-only samples share one text corpus (this reader's share of it)."""

    def __init__(self, datasets: Sequence[DatasetSpec], *, rank: int, world: int, seed: int,
                 text_corpus: Sequence[str] = (), listings: Optional[Sequence[dict]] = None, **stream_args):
        """`listings`: per dataset, {"shards": ..., "owners": ...} already read (else each stream reads them)."""
        self.rank, self.world, self.seed = rank, world, seed
        self.specs = list(datasets)
        self.texts = TextDocuments(text_corpus, reader=rank, readers=world) if text_corpus else None
        self.streams = [PretrainStream(spec.url, rank=rank, world=world, seed=dataset_seed(seed, i), texts=self.texts,
                                       **{**stream_args, **shared}) for i, (spec, shared) in
                        enumerate(zip(self.specs, listings or [{}] * len(self.specs)))]
        weights = np.asarray([spec.weight for spec in self.specs], float)
        self.p = weights / weights.sum()
        self.load_state(None)

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "text_docs": self.texts.consumed if self.texts else 0,
                "text_start": self.texts.start if self.texts else 0,
                "datasets": [stream.state().to_dict() for stream in self.streams]}

    def load_state(self, state: Optional[dict]) -> None:
        self.rng = np.random.default_rng([self.seed, self.rank, 2])
        if state is None:
            for stream in self.streams:
                stream.load_state(StreamState())
            return
        if len(state["datasets"]) != len(self.streams):
            raise DataError(f"the loader state holds {len(state['datasets'])} dataset(s), this run blends "
                            f"{len(self.streams)}")
        if state.get("rng") is not None:
            self.rng.bit_generator.state = state["rng"]
        if self.texts:
            self.texts.seek(state["text_docs"], state.get("text_start", 0))  # checkpoints before dealing: 0
        for stream, saved in zip(self.streams, state["datasets"]):
            stream.load_state(StreamState(**saved))

    def skipped(self) -> tuple[int, int]:
        states = [stream.state() for stream in self.streams]
        return sum(s.skipped_shards for s in states), sum(s.skipped_segments for s in states)

    def __iter__(self) -> "BlendStream":
        return self

    def __next__(self) -> TaskSample:
        which = int(self.rng.choice(len(self.streams), p=self.p)) if len(self.streams) > 1 else 0
        sample = next(self.streams[which])
        sample.origin["dataset"] = which
        return sample
