"""Stage 3, segmentation by diarization, then the report's post-processing (pipeline.segment).

Backends (config `diarize.backend`):
- `embedding`: Silero VAD speech regions cut into chunks (report: 1.5 s), each embedded by a speaker
  encoder with real offline weights (GE2E from `resemblyzer`), clustered (average linkage), then the
  report's chain: cluster merging, chunk reassignment, segment merging. Labels S0, S1, ... in order of
  first appearance within the recording.
- `vad`: Silero VAD speech regions as turns of one speaker "S0", then segment merging only.
- `fixed`: no model at all: the whole recording in windows of `max_segment_seconds` (speaker "S0"), for
  audio-only data and for measuring the pipeline's own overhead.
- `pyannote`: a pyannote.audio `SpeakerDiarization` pipeline (`Pipeline.from_pretrained(folder or hub
  id)`); its speaker embeddings are the cluster representatives for merging, and its embedding model
  embeds the chunks for reassignment. The production default.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.capacity import PoolResources
from pipeline.model_folders import model_folder_problem
from pipeline.segment import (
    Turn, chunk_turns, cluster_embeddings, cluster_representatives, join_contiguous, merge_segments,
    merge_speaker_clusters, reassign_chunks, relabel, split_by_duration, split_long_turns,
)
from pipeline.stages.base import Stage
from pipeline.stages.vad import SileroVad, VadSettings
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft, model_input_problem

BACKENDS = ("pyannote", "embedding", "vad", "fixed")


@dataclass(frozen=True)
class PyannoteSettings:
    """A pyannote.audio `SpeakerDiarization` pipeline: hub id or a local folder with config.yaml."""
    pipeline: str = "pyannote/speaker-diarization-community-1"
    device: str = "cuda"


@dataclass(frozen=True)
class EmbeddingSettings:
    """The offline `embedding` backend: GE2E chunks clustered at `cluster_threshold` (average-linkage cosine)."""
    cluster_threshold: float = 0.75
    device: str = "cpu"


@dataclass(frozen=True)
class DiarizeSettings:
    """The `diarize` section: a backend, then the report's post-processing (§3.1) with its numbers: merge
    clusters above `cluster_merge_threshold`, reassign `chunk_seconds` chunks below
    `chunk_reassign_threshold` (a tail shorter than `min_last_chunk_seconds` joins the chunk before it),
    merge segments up to `max_segment_seconds` across silences up to `max_gap_seconds`; segments shorter
    than `min_segment_seconds` are rejected (too_short). Similarities are cosines, times seconds.
    The three rules can be switched off one by one (`jobs.evaluate --ablate` measures what each is worth);
    `audio` is what the model hears: the decoded original, or the enhanced copy."""
    backend: str = "pyannote"
    pyannote: PyannoteSettings = field(default_factory=PyannoteSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    embedding: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    cluster_merge_threshold: float = 0.6
    chunk_seconds: float = 1.5
    min_last_chunk_seconds: float = 0.75
    chunk_reassign_threshold: float = 0.5
    max_segment_seconds: float = 27.0
    max_gap_seconds: float = 2.0
    min_segment_seconds: float = 1.0
    cluster_merging: bool = True
    chunk_reassignment: bool = True
    segment_merging: bool = True
    audio: str = "original"

    @property
    def device(self) -> str | None:
        """Where this backend's model runs (None: no model that could use a GPU)."""
        return {"pyannote": self.pyannote.device, "embedding": self.embedding.device}.get(self.backend)

    def problems(self) -> list[str]:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"diarize.backend={self.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
        for name in ("cluster_merge_threshold", "chunk_reassign_threshold", "embedding.cluster_threshold"):
            value = self.embedding.cluster_threshold if name.startswith("embedding") else getattr(self, name)
            if not -1.0 <= value <= 1.0:
                problems.append(f"diarize.{name}={value:g} is not a cosine similarity in [-1, 1]")
        if not 0 < self.min_segment_seconds <= self.max_segment_seconds:
            problems.append("diarize: need 0 < min_segment_seconds <= max_segment_seconds")
        if self.max_gap_seconds < 0 or self.chunk_seconds <= 0 or self.min_last_chunk_seconds < 0:
            problems.append("diarize: max_gap_seconds and min_last_chunk_seconds must be >= 0 and chunk_seconds > 0")
        if self.backend == "pyannote":
            problem = model_folder_problem("diarize.pyannote.pipeline", self.pyannote.pipeline, "config.yaml",
                                           "pyannote pipeline folder")
            problems += [problem] if problem else []
        problems += model_input_problem("diarize.audio", self.audio)
        problems += self.vad.problems("diarize.vad")  # the quality stage's speech ratio uses it too
        return problems


DIARIZE_RESOURCES = PoolResources(concurrency=(1, 32), num_cpus=1, num_gpus=1, memory_mb=6144)


def segments_from_turns(turns: list[Turn], cfg: DiarizeSettings) -> list[SegmentDraft]:
    """Merge adjacent same-speaker turns (27 s / 2 s) unless segment merging is off, keep parts within the
    maximum, and mark the ones shorter than the minimum as rejected (recorded, not silently dropped)."""
    merged = split_long_turns(turns, cfg.max_segment_seconds)
    if cfg.segment_merging:
        merged = merge_segments(merged, cfg.max_segment_seconds, cfg.max_gap_seconds)
    kept, short = split_by_duration(merged, cfg.min_segment_seconds)
    too_short = {(t.start, t.end) for t in short}
    return [SegmentDraft(start=t.start, end=t.end, speaker=t.speaker,
                         rejection=Rejection("diarize", "too_short", {"duration": round(t.duration, 3)})
                         if (t.start, t.end) in too_short else None) for t in merged]


def postprocess_speakers(chunks: list[Turn], embeddings: np.ndarray, representatives: dict[str, np.ndarray],
                         cfg: DiarizeSettings) -> list[Turn]:
    """The report's chain on labelled chunks: merge clusters whose representatives are similar,
    reassign chunks at dissimilar adjacent pairs (each rule unless switched off), join what touches;
    speakers renamed S0, S1, ... by first appearance. Representatives that are not finite (a model's empty
    cluster) take no part in merging."""
    if cfg.cluster_merging:
        finite = {label: rep for label, rep in representatives.items() if np.isfinite(rep).all()}
        chunks = relabel(chunks, merge_speaker_clusters(finite, cfg.cluster_merge_threshold))
    if cfg.chunk_reassignment:
        chunks = reassign_chunks(chunks, embeddings,
                                 cluster_representatives([c.speaker for c in chunks], embeddings),
                                 cfg.chunk_reassign_threshold)
    order: dict[str, str] = {}
    for c in chunks:
        order.setdefault(c.speaker, f"S{len(order)}")
    return join_contiguous(relabel(chunks, order))


def label_speakers(chunks: list[Turn], embeddings: np.ndarray, cfg: DiarizeSettings) -> list[Turn]:
    """Speaker turns from unlabelled embedded chunks: average-linkage clustering, then the report's chain."""
    if not chunks:
        return []
    labels = cluster_embeddings(embeddings, cfg.embedding.cluster_threshold)
    chunks = [replace(c, speaker=f"C{label}") for c, label in zip(chunks, labels)]
    return postprocess_speakers(chunks, embeddings, cluster_representatives([c.speaker for c in chunks], embeddings),
                                cfg)


class DiarizeStage(Stage):
    name = "diarize"

    def __init__(self, cfg: DiarizeSettings, sample_rate: int):
        self.cfg, self.sample_rate = cfg, sample_rate

    def setup(self) -> None:
        if self.cfg.backend == "fixed":
            return
        if self.cfg.backend == "pyannote":
            import torch
            from pyannote.audio import Pipeline

            from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

            device = torch.device(self.cfg.pyannote.device)
            self.pipeline = Pipeline.from_pretrained(self.cfg.pyannote.pipeline)
            self.pipeline.to(device)
            # the pipeline's own embedding model, from its public config, for the chunk embeddings
            self.chunk_embedding = PretrainedSpeakerEmbedding(self.pipeline.embedding, device=device)
            return
        self.vad = SileroVad.from_config(self.cfg.vad, self.sample_rate)
        if self.cfg.backend == "embedding":
            from pipeline.stages.speaker_embedding import ResemblyzerEmbedder

            self.embedder = ResemblyzerEmbedder(self.cfg.embedding.device)

    def process(self, work: RecordingWork) -> RecordingWork:
        audio = work.model_input(self.cfg.audio)
        regions = self.vad.speech_regions(audio) if self.cfg.backend in ("embedding", "vad") else None
        work = self.with_segments(work, self.speaker_turns(audio, regions))
        if regions is not None and self.cfg.audio == "original" and work.active:
            work = replace(work, speech_regions=tuple(regions))  # the quality stage measures the same audio
        return work

    def speaker_turns(self, audio: np.ndarray, regions: list[tuple[float, float]] | None = None) -> list[Turn]:
        """Speaker turns; the VAD backends take the speech `regions` when the caller has them."""
        backend, sr = self.cfg.backend, self.sample_rate
        if backend == "fixed":
            return [Turn(0.0, len(audio) / sr, "S0")]
        if backend == "pyannote":
            return self.pyannote_turns(audio)
        if regions is None:
            regions = self.vad.speech_regions(audio)
        turns = [Turn(start, end, "S0") for start, end in regions]
        if backend == "embedding":
            chunks = chunk_turns(turns, self.cfg.chunk_seconds, self.cfg.min_last_chunk_seconds)
            embeddings = self.embedder.embed([audio[round(c.start * sr):round(c.end * sr)] for c in chunks])
            turns = label_speakers(chunks, embeddings, self.cfg)
        return turns

    def with_segments(self, work: RecordingWork, turns: list[Turn]) -> RecordingWork:
        segments = segments_from_turns(turns, self.cfg)
        if not segments:  # nothing to record per segment: the recording itself is the rejected unit
            return replace(work, audio=None, enhanced=None, rejection=Rejection(self.name, "no_speech"))
        return replace(work, segments=tuple(segments))

    def pyannote_turns(self, audio: np.ndarray) -> list[Turn]:
        import torch

        output = self.pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": self.sample_rate})
        seconds = len(audio) / self.sample_rate  # pyannote's frames can run past the end of the audio
        turns = [Turn(max(0.0, segment.start), min(segment.end, seconds), label)
                 for segment, _, label in output.exclusive_speaker_diarization.itertracks(yield_label=True)
                 if segment.start < seconds]
        chunks = chunk_turns(turns, self.cfg.chunk_seconds, self.cfg.min_last_chunk_seconds)
        if not chunks:
            return []
        # one embedding per speaker, in the order of the (overlap-aware) diarization's labels
        representatives = dict(zip(output.speaker_diarization.labels(), output.speaker_embeddings))
        return postprocess_speakers(chunks, self.embed_chunks(audio, chunks), representatives, self.cfg)

    def embed_chunks(self, audio: np.ndarray, chunks: list[Turn]) -> np.ndarray:
        """Chunk embeddings from the pipeline's own embedding model (zero-padded batch with masks)."""
        import torch

        sr = self.sample_rate
        clips = [audio[round(c.start * sr):round(c.end * sr)] for c in chunks]
        longest = max(len(c) for c in clips)
        waveforms = torch.zeros(len(clips), 1, longest)
        masks = torch.zeros(len(clips), longest)
        for i, clip in enumerate(clips):
            waveforms[i, 0, :len(clip)] = torch.from_numpy(clip)
            masks[i, :len(clip)] = 1.0
        embeddings = self.chunk_embedding(waveforms, masks=masks)
        return np.nan_to_num(np.asarray(embeddings, dtype=np.float64))
