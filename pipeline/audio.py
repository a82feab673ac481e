"""Decode, standardise and split audio: any format FFmpeg reads, to mono float32 at the working rate.

Pure numpy apart from `decode_audio_file`, which uses torchcodec (FFmpeg) and fsspec for URLs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


class DecodeError(Exception):
    """The input is not usable audio: unreadable, not audio, empty, or holding non-finite samples."""


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray            # float32 mono at `sample_rate`
    sample_rate: int
    original_sample_rate: int
    original_channels: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def _open_source(source: str):
    """A local path as is; a URL (s3://, gs://, http://...) read into bytes through fsspec."""
    if "://" not in source or source.startswith("file://"):
        path = source[len("file://"):] if source.startswith("file://") else source
        if os.path.isdir(path):
            raise DecodeError(f"{path} is a directory, not an audio file")
        if not os.path.exists(path):
            raise DecodeError(f"{path} does not exist")
        if not os.access(path, os.R_OK):
            raise DecodeError(f"{path} is not readable (permission denied)")
        if os.path.getsize(path) == 0:
            raise DecodeError(f"{path} is empty (0 bytes)")
        return path
    import fsspec

    with fsspec.open(source, "rb") as f:
        return f.read()


def decode_audio_file(source: str, sample_rate: int) -> DecodedAudio:
    """Decode any FFmpeg-readable file or URL to mono float32 at `sample_rate` (FFmpeg resamples)."""
    from torchcodec.decoders import AudioDecoder

    opened = _open_source(source)
    try:
        decoder = AudioDecoder(opened, sample_rate=sample_rate, num_channels=1)
        metadata = decoder.metadata
        samples = decoder.get_all_samples().data.numpy()[0].astype(np.float32, copy=False)
    except RuntimeError as e:  # torchcodec reports FFmpeg failures as RuntimeError
        raise DecodeError(f"FFmpeg cannot decode it: {str(e).splitlines()[0]}") from None
    if samples.size == 0:
        raise DecodeError("no audio samples (zero-length)")
    if not np.isfinite(samples).all():
        raise DecodeError(f"{int((~np.isfinite(samples)).sum())} samples are NaN or infinite")
    return DecodedAudio(samples=samples, sample_rate=sample_rate,
                        original_sample_rate=int(metadata.sample_rate or sample_rate),
                        original_channels=int(metadata.num_channels or 1))


def frame_energy_db(audio: np.ndarray, frame: int, block_frames: int = 4096) -> np.ndarray:
    """RMS level in dBFS of consecutive frames of `frame` samples (a partial last frame is dropped).

    Works through the audio in blocks, so hours of audio need no float64 copy of the whole signal.
    """
    n = len(audio) // frame
    if n == 0:
        return np.full(1, 20 * np.log10(max(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 1e-10)))
    frames = audio[: n * frame].reshape(n, frame)
    power = np.concatenate([np.einsum("ij,ij->i", block, block, dtype=np.float64) / frame
                            for block in (frames[i:i + block_frames] for i in range(0, n, block_frames))])
    return 10 * np.log10(np.maximum(power, 1e-20))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_dbfs: float, max_gain_db: float,
                       gate_db: float, peak: float = 0.99, in_place: bool = False) -> np.ndarray:
    """Scale so that the active (non-silent) part has RMS `target_dbfs`.

    Frames (50 ms) quieter than `gate_db` below the loudest frame are left out of the level, so long
    silences do not inflate the gain; the gain is capped at `max_gain_db` and so that no sample clips.
    `in_place` scales the given float32 array itself (an hour of audio is 230 MB: one copy fewer).
    """
    levels = frame_energy_db(audio, max(1, sample_rate // 20))
    active = levels[levels > levels.max() - gate_db]
    level = 10 * np.log10(np.mean(10 ** (active / 10))) if active.size else -200.0
    gain_db = min(target_dbfs - level, max_gain_db)
    gain = 10 ** (gain_db / 20)
    loudest = float(np.abs(audio).max()) if audio.size else 0.0
    if loudest * gain > peak:
        gain = peak / loudest
    audio = audio if in_place and audio.dtype == np.float32 else audio.astype(np.float32, copy=True)
    audio *= np.float32(gain)
    return audio


def session_bounds(audio: np.ndarray, sample_rate: int, max_seconds: float,
                   search_seconds: float) -> list[tuple[int, int]]:
    """Split points for recordings longer than `max_seconds`: [(first, last), ...] in samples.

    Each cut lies in the last `search_seconds` before the limit, at the quietest second there (the middle
    of the longest silence, in practice), so no session exceeds `max_seconds` and speech is rarely cut.
    """
    num_samples, limit = len(audio), int(max_seconds * sample_rate)
    if num_samples <= limit:
        return [(0, num_samples)]
    frame = max(1, sample_rate // 10)  # 100 ms frames, smoothed over one second
    levels = frame_energy_db(audio, frame)
    smooth = np.convolve(levels, np.ones(10) / 10, mode="same")
    bounds, first = [], 0
    while num_samples - first > limit:
        lo = max(first + 1, first + limit - int(search_seconds * sample_rate)) // frame
        hi = (first + limit) // frame
        cut = (lo + int(np.argmin(smooth[lo:hi]))) * frame if hi > lo else first + limit
        cut = min(max(cut, first + 1), first + limit)
        bounds.append((first, cut))
        first = cut
    bounds.append((first, num_samples))
    return bounds
