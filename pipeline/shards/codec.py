"""Audio and token member encodings: FLAC (16-bit PCM) for audio, `.npy` without pickle for tokens."""
from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono audio to FLAC bytes (16-bit): float in [-1, 1] (values outside are clipped), or int16 PCM as it
    is (the same bytes as float PCM / 32768)."""
    buf = io.BytesIO()
    samples = audio if audio.dtype == np.int16 else np.clip(audio, -1.0, 1.0)
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """FLAC (or any soundfile format) bytes to (float32 mono samples, sample rate)."""
    audio, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return audio, sample_rate


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """`.npy` bytes to an array; object arrays are refused (no unpickling, DESIGN.md)."""
    return np.load(io.BytesIO(data), allow_pickle=False)
