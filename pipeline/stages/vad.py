"""Silero VAD (real weights from the `silero-vad` package): speech regions of an audio array."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD (`diarize.vad`): speech probability `threshold`; silences shorter than `min_silence_ms`
    do not split, speech shorter than `min_speech_ms` is dropped, regions widened by `speech_pad_ms`."""
    threshold: float = 0.5
    min_silence_ms: int = 300
    min_speech_ms: int = 250
    speech_pad_ms: int = 200

    def problems(self, setting: str) -> list[str]:
        problems = []
        if not 0 < self.threshold < 1:
            problems.append(f"{setting}.threshold={self.threshold:g} must be a probability in (0, 1)")
        if min(self.min_silence_ms, self.min_speech_ms, self.speech_pad_ms) < 0:
            problems.append(f"{setting}: min_silence_ms, min_speech_ms and speech_pad_ms must be >= 0")
        return problems


class SileroVad:
    """Loads the ONNX model once; `speech_regions` returns [(start, end)] in seconds.

    `speech_pad_ms` widens each region into the silence around it: Whisper drops whole sentences of a
    clip that starts or ends right at the speech (seen with tiny.en on generated speech).
    """

    def __init__(self, threshold: float, min_silence_ms: int, min_speech_ms: int, speech_pad_ms: int,
                 sample_rate: int = 16000):
        from silero_vad import load_silero_vad

        self.model = load_silero_vad(onnx=True)
        self.threshold, self.min_silence_ms, self.min_speech_ms = threshold, min_silence_ms, min_speech_ms
        self.speech_pad_ms = speech_pad_ms
        self.sample_rate = sample_rate

    @classmethod
    def from_config(cls, cfg: VadSettings, sample_rate: int) -> "SileroVad":
        return cls(cfg.threshold, cfg.min_silence_ms, cfg.min_speech_ms, cfg.speech_pad_ms, sample_rate)

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]:
        import torch
        from silero_vad import get_speech_timestamps

        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), self.model,
                                       sampling_rate=self.sample_rate, threshold=self.threshold,
                                       min_silence_duration_ms=self.min_silence_ms,
                                       min_speech_duration_ms=self.min_speech_ms,
                                       speech_pad_ms=self.speech_pad_ms)
        return [(s["start"] / self.sample_rate, s["end"] / self.sample_rate) for s in stamps]

    def speech_seconds(self, audio: np.ndarray) -> float:
        return sum(end - start for start, end in self.speech_regions(audio))
