"""Stage 3, segmentation by diarization, then the report's post-processing (pipeline.segment).

Backends (config `diarize.backend`):
- `embedding`: Silero VAD speech regions cut into chunks (report: 1.5 s), each embedded by a speaker
  encoder with real offline weights (GE2E from `resemblyzer`), clustered (average linkage), then the
  report's chain: cluster merging, chunk reassignment, segment merging. Labels S0, S1, ... in order of
  first appearance within the recording.
- `vad`: Silero VAD speech regions as turns of one speaker "S0", then segment merging only.
- `fixed`: no model at all: the whole recording in windows of `max_segment_seconds` (speaker "S0"), for
  audio-only data and for measuring the pipeline's own overhead.
The pyannote.audio backend is not built yet (see the curation issue).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from omegaconf import DictConfig

from pipeline.segment import (
    Turn, chunk_turns, cluster_embeddings, cluster_representatives, join_contiguous, merge_segments,
    merge_speaker_clusters, reassign_chunks, relabel, split_by_duration, split_long_turns,
)
from pipeline.stages.base import Stage
from pipeline.stages.vad import SileroVad
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft

BACKENDS = ("embedding", "vad", "fixed")


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


def label_speakers(chunks: list[Turn], embeddings: np.ndarray, cfg: DictConfig) -> list[Turn]:
    """Speaker turns from embedded chunks: cluster, merge similar clusters, reassign chunks at missed
    speaker changes, join what touches; speakers renamed S0, S1, ... by first appearance."""
    if not chunks:
        return []
    labels = cluster_embeddings(embeddings, cfg.embedding.cluster_threshold)
    chunks = [replace(c, speaker=f"C{label}") for c, label in zip(chunks, labels)]
    names = [c.speaker for c in chunks]
    chunks = relabel(chunks, merge_speaker_clusters(cluster_representatives(names, embeddings),
                                                    cfg.cluster_merge_threshold))
    names = [c.speaker for c in chunks]
    chunks = reassign_chunks(chunks, embeddings, cluster_representatives(names, embeddings),
                             cfg.chunk_reassign_threshold)
    order: dict[str, str] = {}
    for c in chunks:
        order.setdefault(c.speaker, f"S{len(order)}")
    return join_contiguous(relabel(chunks, order))


class DiarizeStage(Stage):
    name = "diarize"

    def __init__(self, cfg: DictConfig, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate

    def setup(self) -> None:
        if self.cfg.backend == "fixed":
            return
        self.vad = SileroVad.from_config(self.cfg.vad, self.sample_rate)
        if self.cfg.backend == "embedding":
            from pipeline.stages.speaker_embedding import ResemblyzerEmbedder

            self.embedder = ResemblyzerEmbedder(self.cfg.embedding.device)

    def process(self, work: RecordingWork) -> RecordingWork:
        if self.cfg.backend == "fixed":
            turns = [Turn(0.0, len(work.audio) / self.sample_rate, "S0")]
            return replace(work, segments=tuple(segments_from_turns(turns, self.cfg)))
        turns = [Turn(start, end, "S0") for start, end in self.vad.speech_regions(work.audio)]
        if self.cfg.backend == "embedding":
            sr = self.sample_rate
            chunks = chunk_turns(turns, self.cfg.chunk_seconds, self.cfg.min_last_chunk_seconds)
            embeddings = self.embedder.embed([work.audio[round(c.start * sr):round(c.end * sr)] for c in chunks])
            turns = label_speakers(chunks, embeddings, self.cfg)
        segments = segments_from_turns(turns, self.cfg)
        if not segments:  # nothing to record per segment: the recording itself is the rejected unit
            return replace(work, audio=None, enhanced=None, rejection=Rejection(self.name, "no_speech"))
        return replace(work, segments=tuple(segments))
