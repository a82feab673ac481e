"""Stage 3, segmentation by diarization, then the report's post-processing (pipeline.segment).

Backends (config `diarize.backend`):
- `vad`: Silero VAD speech regions as turns of one speaker, then segment merging. No speaker labels;
  offline with real weights. The pyannote backend with cluster merging and chunk reassignment is not
  built yet (see the curation issue).
"""
from __future__ import annotations

from dataclasses import replace

from omegaconf import DictConfig

from pipeline.segment import Turn, merge_segments, split_by_duration, split_long_turns
from pipeline.stages.base import Stage
from pipeline.stages.vad import SileroVad
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft

BACKENDS = ("vad",)


def segments_from_turns(turns: list[Turn], cfg: DictConfig) -> list[SegmentDraft]:
    """Merge adjacent same-speaker turns (27 s / 2 s), keep parts within the maximum, and mark the ones
    shorter than the minimum as rejected (recorded, not silently dropped)."""
    merged = merge_segments(split_long_turns(turns, cfg.max_segment_seconds), cfg.max_segment_seconds,
                            cfg.max_gap_seconds)
    kept, short = split_by_duration(merged, cfg.min_segment_seconds)
    too_short = {(t.start, t.end) for t in short}
    return [SegmentDraft(start=t.start, end=t.end, speaker=t.speaker,
                         rejection=Rejection("diarize", "too_short", {"duration": round(t.duration, 3)})
                         if (t.start, t.end) in too_short else None) for t in merged]


class DiarizeStage(Stage):
    name = "diarize"

    def __init__(self, cfg: DictConfig, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate

    def setup(self) -> None:
        self.vad = SileroVad.from_config(self.cfg.vad, self.sample_rate)

    def process(self, work: RecordingWork) -> RecordingWork:
        turns = [Turn(start, end, "S0") for start, end in self.vad.speech_regions(work.audio)]
        segments = segments_from_turns(turns, self.cfg)
        if not segments:  # nothing to record per segment: the recording itself is the rejected unit
            return replace(work, audio=None, enhanced=None, rejection=Rejection(self.name, "no_speech"))
        return replace(work, segments=tuple(segments))
