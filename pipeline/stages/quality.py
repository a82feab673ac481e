"""Stage 5, quality metrics and filters: DNSMOS P.835 (speechmos), SNR estimate, VAD speech ratio,
characters per second, ASR confidence and duration. Every drop is a segment rejection with its reason
and metrics; a threshold set to null in the config is not applied.

The speech ratio is Silero VAD's speech within the segment. When diarization already ran Silero over the
decoded recording (the `vad` and `embedding` backends on the original audio, with the same `diarize.vad`
settings) its regions are reused rather than running the VAD again on every segment; with pyannote, or
diarization on the enhanced audio, the segment's own audio goes through the VAD here. The SNR estimate is
a percentile of 20 ms frame levels (a pass over the samples, nothing worth reusing: decode's levels are
100 ms frames)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from pipeline.audio import frame_energy_db
from pipeline.capacity import PoolResources
from pipeline.model_folders import runs_on_gpu
from pipeline.shards.schema import Quality
from pipeline.stages.base import Stage
from pipeline.stages.dnsmos import PRECISIONS, DnsmosScorer
from pipeline.stages.vad import SileroVad, VadSettings
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft


@dataclass(frozen=True)
class QualityLimits:
    """Segments outside these are rejected with the reason; None: not applied. DNSMOS on its 1-5 scale,
    SNR in dB, speech ratio in 0-1, durations in seconds."""
    min_dnsmos_ovrl: Optional[float] = 2.5
    min_snr_db: Optional[float] = 10.0
    min_speech_ratio: Optional[float] = 0.5
    min_chars_per_sec: Optional[float] = 2.0
    max_chars_per_sec: Optional[float] = 30.0
    min_avg_logprob: Optional[float] = -1.0
    max_no_speech_prob: Optional[float] = 0.6
    min_duration: Optional[float] = 1.0
    max_duration: Optional[float] = 30.0

    def problems(self) -> list[str]:
        problems = []
        for low, high in (("min_chars_per_sec", "max_chars_per_sec"), ("min_duration", "max_duration")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                problems.append(f"quality.limits.{low} > quality.limits.{high}")
        for name, (low, high) in {"min_dnsmos_ovrl": (1, 5), "min_speech_ratio": (0, 1),
                                  "max_no_speech_prob": (0, 1)}.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                problems.append(f"quality.limits.{name}={value:g} is outside [{low}, {high}]")
        return problems


@dataclass(frozen=True)
class QualitySettings:
    """The `quality` section: metrics on every kept segment (DNSMOS P.835 through speechmos' ONNX weights
    when `dnsmos`, on `device`: cpu, or cuda through onnxruntime's CUDA provider), then the `limits`.
    `dnsmos_hop_seconds`: 1 scores speechmos' own windows; a longer hop scores fewer (faster, a near score).
    `dnsmos_precision`: float32 gives speechmos' scores to float rounding; bfloat16 (CPU only) runs the
    model's convolutions in bfloat16 (scores within a few thousandths, faster where the CPU has native
    bfloat16); auto takes bfloat16 on such a CPU. bench/quality.py prints each against speechmos."""
    enabled: bool = True
    dnsmos: bool = True
    device: str = "cpu"
    dnsmos_hop_seconds: float = 1.0
    dnsmos_precision: str = "auto"
    limits: QualityLimits = field(default_factory=QualityLimits)

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        problems = self.limits.problems()
        if self.dnsmos_hop_seconds < 1 or self.dnsmos_hop_seconds != int(self.dnsmos_hop_seconds):
            problems.append(f"quality.dnsmos_hop_seconds={self.dnsmos_hop_seconds:g} must be a whole number of "
                            f"seconds >= 1 (1: speechmos' windows)")
        if self.dnsmos_precision not in PRECISIONS:
            problems.append(f"quality.dnsmos_precision={self.dnsmos_precision} is not one of {', '.join(PRECISIONS)}")
        elif self.dnsmos_precision == "bfloat16" and runs_on_gpu(self.device):
            problems.append("quality.dnsmos_precision=bfloat16 is a CPU path: on cuda use float32 or auto")
        if self.dnsmos and runs_on_gpu(self.device):
            from pipeline.stages.dnsmos import cuda_provider_problem

            if problem := cuda_provider_problem():
                problems.append(f"quality.device={self.device}: {problem}")
        return problems


QUALITY_RESOURCES = PoolResources(concurrency=(1, 32), num_cpus=2, num_gpus=0, memory_mb=3072)


def estimate_snr_db(audio: np.ndarray, sample_rate: int) -> float:
    """Speech level over noise floor: the 95th against the 10th percentile of 20 ms frame levels (dB).

    A blind estimate (no clean reference); good enough to catch segments drowned in noise.
    """
    levels = frame_energy_db(audio, max(1, sample_rate // 50))
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def overlap_seconds(start: float, end: float, regions: Sequence[tuple[float, float]]) -> float:
    """Seconds of [start, end] covered by the (disjoint) regions."""
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in regions)


def filter_reasons(segment: SegmentDraft, q: Quality, limits: QualityLimits) -> dict[str, float]:
    """Which limits a segment breaks: {reason: value}. A limit of null is not applied."""
    checks = {
        "dnsmos_ovrl": (q.dnsmos_ovrl, limits.min_dnsmos_ovrl, None),
        "snr_db": (q.snr_db, limits.min_snr_db, None),
        "speech_ratio": (q.speech_ratio, limits.min_speech_ratio, None),
        "chars_per_sec": (q.chars_per_sec, limits.min_chars_per_sec, limits.max_chars_per_sec),
        "avg_logprob": (segment.asr.avg_logprob, limits.min_avg_logprob, None),
        "no_speech_prob": (segment.asr.no_speech_prob, None, limits.max_no_speech_prob),
        "duration": (segment.duration, limits.min_duration, limits.max_duration),
    }
    broken = {}
    for name, (value, low, high) in checks.items():
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            broken[name] = round(float(value), 4)
    return broken


class QualityStage(Stage):
    name = "quality"

    def __init__(self, cfg: QualitySettings, vad_cfg: VadSettings, sample_rate: int, threads: int = 1):
        self.cfg, self.vad_cfg, self.sample_rate, self.threads = cfg, vad_cfg, sample_rate, threads

    def setup(self) -> None:
        self.vad = SileroVad.from_config(self.vad_cfg, self.sample_rate)
        self.dnsmos = (DnsmosScorer(self.threads, self.cfg.device, hop_seconds=self.cfg.dnsmos_hop_seconds,
                                    precision=self.cfg.dnsmos_precision) if self.cfg.dnsmos else None)

    def metrics(self, clip: np.ndarray, segment: SegmentDraft, mos: Optional[dict],
                speech_regions: Optional[Sequence[tuple[float, float]]]) -> Quality:
        seconds, text = len(clip) / self.sample_rate, segment.text
        speech = (self.vad.speech_seconds(clip) if speech_regions is None
                  else overlap_seconds(segment.start, segment.end, speech_regions))
        return Quality(
            dnsmos_sig=mos["sig"] if mos else None, dnsmos_bak=mos["bak"] if mos else None,
            dnsmos_ovrl=mos["ovrl"] if mos else None, snr_db=estimate_snr_db(clip, self.sample_rate),
            speech_ratio=min(1.0, speech / seconds),
            chars_per_sec=None if text is None else len(text.replace(" ", "")) / seconds)

    def process(self, work: RecordingWork) -> RecordingWork:
        sr, segments = work.sample_rate, list(work.segments)
        todo = [i for i, s in enumerate(segments) if s.rejection is None]
        clips = {i: work.audio[round(segments[i].start * sr):round(segments[i].end * sr)] for i in todo}
        # every kept segment's DNSMOS windows in one batched pass through the session
        scores = ([None] * len(todo) if self.dnsmos is None
                  else self.dnsmos.score([np.clip(clips[i], -1.0, 1.0) for i in todo]))
        for i, mos in zip(todo, scores):
            segment = segments[i]
            quality = self.metrics(clips[i], segment, mos, work.speech_regions)
            broken = filter_reasons(segment, quality, self.cfg.limits)
            rejection = Rejection(self.name, ",".join(sorted(broken)), broken) if broken else None
            segments[i] = replace(segment, quality=quality, rejection=rejection)
        return replace(work, segments=tuple(segments))
