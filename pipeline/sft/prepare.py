"""Preparation of one conversation (worker side): its audio messages decoded by the curation job's decode
stage and concatenated, one segment per audio message for the tokenizer stage, then packed into one
sample (pipeline/shards/schema.py, ConversationRecord) for the writers.

`PrepareSftConfig` is the job's typed configuration (`configs/sft/prepare.yaml`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterator, Optional

import numpy as np
from omegaconf import MISSING

from pipeline.capacity import PoolResources, TaskResources, WriteResources
from pipeline.config import WORKING_SAMPLE_RATE, device_problems
from pipeline.ray_runner import RaySettings
from pipeline.sft.conversations import ConversationPlan
from pipeline.shards.schema import (
    AudioInfo, Conversation, ConversationRecord, FailedRecord, Message, PipelineInfo, TokenInfo, printable,
)
from pipeline.shards.writer import SegmentSample, encode_sample
from pipeline.stages.decode import DECODE_RESOURCES, DecodeSettings, decode_sessions
from pipeline.stages.pack import PACK_RESOURCES, PackedRecording
from pipeline.stages.tokenize import TOKENIZE_RESOURCES, TokenizeSettings
from pipeline.stages.work import Failure, RecordingWork, SegmentDraft
from pipeline.stages.write import WRITE_RESOURCES, ShardTargets


@dataclass(frozen=True)
class PrepareResources:
    decode: TaskResources = field(default_factory=lambda: DECODE_RESOURCES)
    pack: TaskResources = field(default_factory=lambda: PACK_RESOURCES)
    write: WriteResources = field(default_factory=lambda: WRITE_RESOURCES)
    tokenize: PoolResources = field(default_factory=lambda: TOKENIZE_RESOURCES)


@dataclass(frozen=True)
class PrepareSftConfig:
    """Everything `python -m jobs.prepare_sft` reads (configs/sft/prepare.yaml documents each value)."""
    input: str = MISSING
    output: str = MISSING
    storage_options: Dict[str, Any] = field(default_factory=dict)
    audio_root: Optional[str] = None
    instructions: Optional[str] = None
    spoken_instruction_fraction: float = 0.5
    seed: int = 0
    max_message_seconds: float = 120.0
    retry_failed: bool = False
    sample_rate: int = WORKING_SAMPLE_RATE
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    shards: ShardTargets = field(default_factory=ShardTargets)
    ray: RaySettings = field(default_factory=RaySettings)
    resources: PrepareResources = field(default_factory=PrepareResources)

    def pools(self) -> dict[str, PoolResources]:
        return {"tokenize": self.resources.tokenize}

    def stage_devices(self) -> dict[str, str]:
        return {"tokenize": self.tokenize.device}

    def problems(self) -> list[str]:
        """Every setting that cannot run (the pools file's entries are `InstructionPools.problems`)."""
        problems = []
        if not 0 <= self.spoken_instruction_fraction <= 1:
            problems.append(f"spoken_instruction_fraction={self.spoken_instruction_fraction:g} must be in [0, 1]")
        if self.sample_rate != WORKING_SAMPLE_RATE:
            problems.append(f"sample_rate={self.sample_rate!r}: the tokenizer and Whisper work at "
                            f"{WORKING_SAMPLE_RATE} Hz")
        if not self.tokenize.enabled:
            problems.append("tokenize.enabled=false: the trainer needs the semantic tokens of every audio message")
        if not self.max_message_seconds > 0:
            problems.append("max_message_seconds must be > 0")
        for section in (self.decode, self.tokenize, self.shards, self.ray):
            problems += section.problems()
        for name in ("decode", "pack", "write", "tokenize"):
            problems += getattr(self.resources, name).problems(f"resources.{name}")
        return problems + device_problems(self.stage_devices(), self.pools())

def decode_conversation(plan: ConversationPlan, cfg: PrepareSftConfig) -> RecordingWork:
    """Its audio messages decoded (mono, the working rate, loudness normalised) and concatenated, with one
    segment per audio message; a refused line or unreadable audio is the work's failure, naming the line."""
    sr = cfg.sample_rate
    work = RecordingWork(source=plan.source, recording_id=plan.recording_id, sample_rate=sr, conversation=plan)
    if plan.error:
        return replace(work, failure=Failure("parse", "ConversationError", plan.error))
    started, clips, segments, cursor = time.perf_counter(), [], [], 0
    for index, message in enumerate(plan.messages):
        if not message.audio:
            continue
        sessions = list(decode_sessions(message.audio, cfg.decode, sr, storage_options=cfg.storage_options))
        problem = next((s.failure.message for s in sessions if s.failure), None)
        if problem is None and len(sessions) != 1:
            problem = f"longer than decode.max_session_minutes ({cfg.decode.max_session_minutes:g})"
        elif problem is None and sessions[0].seconds > cfg.max_message_seconds:
            problem = f"{sessions[0].seconds:.1f} s, longer than max_message_seconds ({cfg.max_message_seconds:g})"
        if problem is not None:
            return replace(work, failure=Failure("decode", "AudioError", f"line {plan.line}: message {index}: audio "
                                                                          f"{message.audio}: {problem}"))
        audio = sessions[0].audio
        segments.append(SegmentDraft(start=cursor / sr, end=(cursor + len(audio)) / sr, speaker=message.role))
        clips.append(audio)
        cursor += len(audio)
    audio = np.concatenate(clips).astype(np.float32)
    return replace(work, audio=audio, segments=tuple(segments), source_seconds=len(audio) / sr,
                   stage_seconds=(("decode", time.perf_counter() - started),))


def expand_conversation(item: dict, cfg: PrepareSftConfig) -> Iterator[RecordingWork]:
    """The Ray adapter's input step: one plan (pickled across Ray) -> its one work."""
    import pickle

    yield decode_conversation(pickle.loads(item["plan"]), cfg)


def pack_conversation(work: RecordingWork, pipeline: PipelineInfo) -> PackedRecording:
    """The finished work as one conversation sample (audio and tokens of its messages concatenated)."""
    started = time.perf_counter()
    plan: ConversationPlan = work.conversation
    common = dict(source=printable(work.source), recording_id=work.recording_id, seconds=work.seconds,
                  source_seconds=work.seconds, stage_seconds=work.stage_seconds)
    if work.failure is not None:
        f = work.failure
        return PackedRecording(**common, failure=FailedRecord(printable(work.source), work.recording_id, f.stage,
                                                               f.error_type, printable(f.message)))
    audio_segments = iter(work.segments)
    messages, tokens, first_sample, first_token = [], [], 0, 0
    for m in plan.messages:
        if not m.audio:
            messages.append(Message(m.role, m.message_type, text=m.text))
            continue
        segment = next(audio_segments)
        n = round(segment.end * work.sample_rate) - round(segment.start * work.sample_rate)
        messages.append(Message(m.role, m.message_type, text=m.text, audio_source=printable(m.audio),
                                first_sample=first_sample, num_samples=n, first_token=first_token,
                                num_tokens=len(segment.tokens)))
        tokens.append(segment.tokens)
        first_sample, first_token = first_sample + n, first_token + len(segment.tokens)
    ids = np.concatenate(tokens).astype(np.int32)
    record = ConversationRecord(
        recording_id=work.recording_id, source=printable(work.source), segment_index=0, start=0.0,
        end=len(work.audio) / work.sample_rate, audio=AudioInfo(work.sample_rate, len(work.audio)),
        tokens=TokenInfo(count=len(ids), model=work.segments[0].token_model), pipeline=pipeline,
        conversation=Conversation(plan.task_type, plan.line, tuple(messages)))
    sample = encode_sample(SegmentSample(record=record, audio=work.audio, tokens=ids))
    return PackedRecording(**{**common, "stage_seconds": work.stage_seconds + (
        ("pack", time.perf_counter() - started),)}, samples=(sample,))
