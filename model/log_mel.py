"""Whisper's log-mel spectrogram, batched in torch (so it runs on the model's device).

Computes what `transformers.WhisperFeatureExtractor` computes for each row of the batch: centred STFT
(n_fft 400, hop 160, Hann, reflect padding), power, Slaney mel filters, last frame dropped,
log10 clamped at 1e-10, floored at the row's maximum minus 8, then (x + 4) / 4.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
CHUNK_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """[N_FFT//2 + 1, n_mels] Slaney filters, the very matrix Whisper's feature extractor uses."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney").astype(np.float32)


def log_mel_spectrogram(audio: torch.Tensor, n_mels: int) -> torch.Tensor:
    """[B, samples] float audio at 16 kHz -> [B, n_mels, samples // 160] log-mel features."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio.float(), N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(mel_filters(n_mels)).to(audio.device)
    log_spec = torch.clamp(filters.T @ power, min=1e-10).log10()
    row_max = log_spec.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(log_spec, row_max - 8.0) + 4.0) / 4.0


def split_chunks(audio: np.ndarray, chunk_samples: int = CHUNK_SAMPLES) -> list[np.ndarray]:
    """Non-overlapping 30 s pieces of a clip, in order (the last may be shorter; an empty clip gives none)."""
    return [audio[start:start + chunk_samples] for start in range(0, len(audio), chunk_samples)]
