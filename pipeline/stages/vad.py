"""Silero VAD (real weights from the `silero-vad` package): speech regions of an audio array."""
from __future__ import annotations

import numpy as np


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
    def from_config(cls, cfg, sample_rate: int) -> "SileroVad":
        """From a `diarize.vad` config section: threshold, min_silence_ms, min_speech_ms, speech_pad_ms."""
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
