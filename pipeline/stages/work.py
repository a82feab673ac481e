"""What flows between stages: one recording (or session) and its segments, as typed immutable records.

A stage returns a new `RecordingWork` (dataclasses.replace); it never mutates one. A recording that a
stage rejects whole carries `rejection`; one that raised carries `failure`; later stages pass both by.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from pipeline.shards.schema import AsrInfo, Quality, Word

# What a model stage may hear (its `audio` setting): the decoded recording or the enhancement stage's copy.
MODEL_INPUTS = ("original", "enhanced")


def model_input_problem(setting: str, value: str) -> list[str]:
    if value in MODEL_INPUTS:
        return []
    return [f"{setting}={value!r}: choose original (the decoded audio) or enhanced (the enhancement stage's output)"]


@dataclass(frozen=True)
class Rejection:
    stage: str
    reason: str
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    stage: str
    error_type: str
    message: str


@dataclass(frozen=True)
class SegmentDraft:
    """A segment being built: times in seconds from the start of the session's audio."""
    start: float
    end: float
    speaker: str
    text: Optional[str] = None
    words: tuple[Word, ...] = ()
    language: Optional[str] = None
    language_prob: Optional[float] = None
    asr: AsrInfo = AsrInfo()
    quality: Quality = Quality()
    tokens: Optional[np.ndarray] = None
    token_model: Optional[str] = None
    rejection: Optional[Rejection] = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class RecordingWork:
    """One unit of work: a source file, or one session of a long one (`session` set, `offset` seconds in)."""
    source: str
    recording_id: str
    session: Optional[int] = None
    offset: float = 0.0
    sample_rate: int = 16000
    audio: Optional[np.ndarray] = None
    enhanced: Optional[np.ndarray] = None
    original_sample_rate: Optional[int] = None
    source_seconds: Optional[float] = None
    segments: tuple[SegmentDraft, ...] = ()
    rejection: Optional[Rejection] = None
    failure: Optional[Failure] = None
    stage_seconds: tuple[tuple[str, float], ...] = ()
    conversation: Optional[object] = None  # a fine-tuning conversation's plan (pipeline/sft), carried to pack
    # Silero VAD's speech in the decoded audio (seconds), where diarization ran it: quality's speech ratio
    speech_regions: Optional[tuple[tuple[float, float], ...]] = None

    @property
    def active(self) -> bool:
        """Still to be processed (neither rejected whole nor failed)."""
        return self.rejection is None and self.failure is None

    @property
    def seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / self.sample_rate

    def model_input(self, which: str) -> np.ndarray:
        """The audio a model stage hears: `original` (decoded) or `enhanced` (the enhancement stage's output)."""
        if which == "enhanced":
            if self.enhanced is None:
                raise ValueError("this stage reads the enhanced audio but there is none (enhance.enabled is off)")
            return self.enhanced
        return self.audio

    def kept_segments(self) -> list[SegmentDraft]:
        return [s for s in self.segments if s.rejection is None]
