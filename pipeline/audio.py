"""Decode, standardise and split audio: any format FFmpeg reads, to mono float32 at the working rate.

Pure numpy apart from `AudioFile`, which uses torchcodec (FFmpeg) or, for files already mono at the
working rate in a lossless format, libsndfile, and the storage layer for URLs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple, Optional

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


class _OpenedByDescriptor(str):
    """A `/proc/self/fd/N` alias of a file whose own name FFmpeg cannot be given; closes N when dropped."""

    def __del__(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def _utf8_alias(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    alias = _OpenedByDescriptor(f"/proc/self/fd/{fd}")
    alias.fd = fd
    return alias


class _DownloadedCopy(str):
    """The path of a local temp copy of a remote input; removes the copy when dropped."""

    def __del__(self):
        try:
            os.unlink(self)
        except OSError:
            pass


def _open_source(source: str, storage_options=None):
    """A local path as is; a URL (s3://, gs://, ...) streamed to a local temp file through the storage
    layer (memory stays one chunk, whatever the length: FFmpeg then seeks in it like any file)."""
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
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8: FFmpeg (through torchcodec) takes only str
            return _utf8_alias(path)
        return path
    from pipeline.shards.storage import StorageError, download_to_temp

    try:
        copy = _DownloadedCopy(download_to_temp(source, storage_options))
    except FileNotFoundError:
        raise DecodeError(f"{source} does not exist") from None
    except (OSError, StorageError) as e:
        raise DecodeError(f"{source} cannot be read ({type(e).__name__}: {e})") from None
    if os.path.getsize(copy) == 0:
        raise DecodeError(f"{source} is empty (0 bytes)")
    return copy


def decode_audio_file(source: str, sample_rate: int) -> DecodedAudio:
    """Decode a whole FFmpeg-readable file or URL to mono float32 at `sample_rate` (FFmpeg resamples)."""
    audio_file = AudioFile(source, sample_rate)
    samples = audio_file.read(0.0, None)
    if samples.size == 0:
        raise DecodeError("no audio samples (zero-length)")
    return DecodedAudio(samples=samples, sample_rate=sample_rate,
                        original_sample_rate=audio_file.original_sample_rate,
                        original_channels=audio_file.original_channels)


# WAV and FLAC that need neither resampling nor downmixing: libsndfile reads them 2-3x faster than FFmpeg
# through torchcodec, sample for sample the same floats (PCM / 2^(bits-1), float as stored; tested). Integer
# PCM is read as integers and scaled here: libsndfile's own conversion to float takes 3x as long, and a
# power-of-two scale gives the same floats exactly. Its samples are finite by construction.
_NATIVE_FORMATS = {"WAV", "WAVEX", "FLAC"}


class _NativeRead(NamedTuple):
    dtype: str  # what libsndfile reads into
    scale: Optional[float]  # to float32 (None: floats as stored)


PCM16_SCALE = 2.0 ** -15  # libsndfile's scale: float = 16-bit PCM / 32768
_NATIVE_READ = {"PCM_16": _NativeRead("int16", PCM16_SCALE), "PCM_24": _NativeRead("int32", 2.0 ** -31),
                "FLOAT": _NativeRead("float32", None)}
_NATIVE_BLOCK = 1 << 20  # samples read and scaled per step: no full-length integer copy of an hour


def scaled_pcm16(samples: np.ndarray, factor: float, out: np.ndarray | None = None) -> np.ndarray:
    """round(samples x `factor`) as 16-bit PCM, clipped, computed in float32 a block at a time (no full-length
    float temporary for an hour). Float audio with factor 32768 gives its PCM; 16-bit PCM with a gain gives
    exactly the PCM of the float audio it stands for times that gain: scaling by a power of two commutes
    with float rounding. `out`: the int16 array to fill, which may be 16-bit `samples` themselves (each
    block is read whole before it is written)."""
    pcm = np.empty(len(samples), dtype=np.int16) if out is None else out
    for first in range(0, len(samples), _NATIVE_BLOCK):
        block = samples[first:first + _NATIVE_BLOCK] * np.float32(factor)
        np.clip(block, -32768.0, 32767.0, out=block)
        pcm[first:first + _NATIVE_BLOCK] = np.rint(block, out=block)
    return pcm


def _native_info(opened: str, sample_rate: int):
    """libsndfile's header of a file it reads as it is at `sample_rate` (None: FFmpeg's job)."""
    import soundfile as sf

    try:
        info = sf.info(opened)
    except Exception:  # not a format libsndfile knows, or damaged: FFmpeg decides
        return None
    native = (info.format in _NATIVE_FORMATS and info.subtype in _NATIVE_READ and info.channels == 1
              and info.samplerate == sample_rate)
    return info if native else None


class AudioFile:
    """An opened source read in time ranges, so hours of audio never sit in memory at once.

    Each `read` uses a fresh FFmpeg decoder: with torchcodec 0.7, a second range read on the same
    resampling decoder returns samples that do not line up with a whole-file decode (measured: white
    noise decorrelates completely). The level scan, which only needs energies, reads blocks in order.
    Mono WAV or FLAC at the working rate is read by libsndfile instead (`native`).
    """

    def __init__(self, source: str, sample_rate: int, storage_options=None):
        self.opened = _open_source(source, storage_options)
        self.sample_rate = sample_rate
        info = _native_info(self.opened, sample_rate)
        self.native = info is not None
        self.native_read = _NATIVE_READ[info.subtype] if self.native else None
        if self.native:
            self.original_sample_rate, self.original_channels = sample_rate, 1
            self.header_seconds = info.frames / sample_rate
            return
        metadata = self._decoder().metadata
        self.original_sample_rate = int(metadata.sample_rate or sample_rate)
        self.original_channels = int(metadata.num_channels or 1)
        self.header_seconds = metadata.duration_seconds_from_header  # None where the container does not say

    def _decoder(self):
        from torchcodec.decoders import AudioDecoder

        try:
            return AudioDecoder(self.opened, sample_rate=self.sample_rate, num_channels=1)
        except RuntimeError as e:  # torchcodec reports FFmpeg failures as RuntimeError
            raise DecodeError(f"FFmpeg cannot decode it: {str(e).splitlines()[0]}") from None

    def read(self, start_seconds: float, stop_seconds: float | None, decoder=None) -> np.ndarray:
        """Samples in [start, stop) (None: to the end), float32; empty past the end. Non-finite samples
        are a DecodeError."""
        if self.native:
            audio = self._read_native(start_seconds, stop_seconds)
        else:
            decoder = decoder or self._decoder()
            try:
                samples = decoder.get_samples_played_in_range(start_seconds, stop_seconds)
            except RuntimeError as e:
                if "No audio frames were decoded" in str(e):
                    return np.zeros(0, dtype=np.float32)
                raise DecodeError(f"FFmpeg cannot decode it: {str(e).splitlines()[0]}") from None
            audio = samples.data.numpy()[0].astype(np.float32, copy=False)
        if self.native and self.native_read.scale is not None:
            return audio  # scaled integer PCM
        if not np.isfinite(audio).all():
            raise DecodeError(f"{int((~np.isfinite(audio)).sum())} samples are NaN or infinite")
        return audio

    @property
    def reads_pcm16(self) -> bool:
        """A 16-bit file that libsndfile reads as it is (`read_pcm16`)."""
        return self.native and self.native_read.dtype == "int16"

    def read_pcm16(self) -> np.ndarray:
        """The whole file's 16-bit PCM (`reads_pcm16` files): what `read` returns times 32768, read in half
        the memory and without the conversion."""
        return self._read_native(0.0, None, as_stored=True)

    def _read_native(self, start_seconds: float, stop_seconds: float | None, as_stored: bool = False
                     ) -> np.ndarray:
        import soundfile as sf

        # the samples FFmpeg gives for [start, stop): those whose index rounds from the times (tested)
        first = round(start_seconds * self.sample_rate)
        last = None if stop_seconds is None else round(stop_seconds * self.sample_rate)
        try:
            with sf.SoundFile(self.opened) as f:
                if first >= f.frames:
                    return np.zeros(0, dtype=np.float32)
                f.seek(first)
                wanted = f.frames - first if last is None else max(0, min(last, f.frames) - first)
                dtype, scale = self.native_read
                if scale is None or as_stored:
                    return f.read(wanted, dtype=dtype)
                return _scaled_blocks(f, wanted, dtype, scale)
        except sf.LibsndfileError as e:
            raise DecodeError(f"libsndfile cannot read it: {e}") from None

    def scan(self, block_seconds: float) -> tuple[np.ndarray, int, float]:
        """One pass over the file: (100 ms frame levels in dB, number of samples, largest absolute sample)."""
        frame = level_frame(self.sample_rate)
        block_seconds = max(frame / self.sample_rate, round(block_seconds * 10) / 10)  # whole frames per block
        levels, total, loudest, start = [], 0, 0.0, 0.0
        decoder = None if self.native else self._decoder()
        while True:
            block = self.read(start, start + block_seconds, decoder)
            if block.size == 0:
                break
            block_levels, _, block_loudest = levels_of(block, self.sample_rate)
            levels.append(block_levels)
            total += len(block)
            loudest = max(loudest, block_loudest)
            start += block_seconds
        if total == 0:
            raise DecodeError("no audio samples (zero-length)")
        return np.concatenate(levels), total, loudest


def _scaled_blocks(opened_file, wanted: int, dtype: str, scale: float) -> np.ndarray:
    """`wanted` integer samples from where `opened_file` stands, as float32 times `scale`; fewer where the file
    ends early (a truncated WAV whose header says more)."""
    audio = np.empty(wanted, dtype=np.float32)
    block = np.empty(min(wanted, _NATIVE_BLOCK), dtype=dtype)
    done = 0
    while done < wanted:
        got = len(opened_file.read(out=block[:min(len(block), wanted - done)]))
        if got == 0:
            break
        np.multiply(block[:got], np.float32(scale), out=audio[done:done + got], dtype=np.float32)
        done += got
    return audio if done == wanted else audio[:done].copy()


_LEVEL_BLOCK_FRAMES = 4096  # frames per block of frame_energy_db's sums


def levels_of(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int, float]:
    """What `AudioFile.scan` measures, of audio already in memory: (100 ms frame levels in dB, number of
    samples, largest absolute sample); a partial last frame is dropped. 16-bit PCM is measured as the float
    audio it stands for (PCM / 32768), the same values to the bit (pcm16_levels)."""
    if audio.size == 0:
        raise DecodeError("no audio samples (zero-length)")
    frame = level_frame(sample_rate)
    usable = len(audio) - len(audio) % frame if len(audio) >= frame else len(audio)
    if audio.dtype == np.int16:
        if usable < frame:
            loudest = max(int(audio.max()), -int(audio.min())) * PCM16_SCALE
            return frame_energy_db(audio * np.float32(PCM16_SCALE), frame), len(audio), loudest
        levels, loudest = pcm16_levels(audio, frame)
        return levels, len(audio), loudest
    loudest = max(float(audio.max()), -float(audio.min()))  # no |audio| temporary: 460 MB for two hours
    return frame_energy_db(audio[:usable], frame), len(audio), loudest


def pcm16_levels(pcm: np.ndarray, frame: int, block_frames: int = 256) -> tuple[np.ndarray, float]:
    """frame_energy_db of the float audio PCM / 32768, and its largest absolute sample, in one pass over the
    PCM a cache-sized block at a time. The same values to the bit: a frame's float64 sum of (PCM / 32768)^2
    is exact (every term a whole multiple of 2^-30, and a frame's sum of them within 53 bits), so it is the
    frame's integer sum of PCM^2 times 2^-30, which is what is made here."""
    usable = len(pcm) - len(pcm) % frame
    frames = pcm[:usable].reshape(-1, frame)
    sums = np.empty(len(frames), dtype=np.float64)
    high, low = int(pcm[usable:].max(initial=0)), int(pcm[usable:].min(initial=0))
    for first in range(0, len(frames), block_frames):
        block = frames[first:first + block_frames]
        high, low = max(high, int(block.max())), min(low, int(block.min()))
        wide = block.astype(np.int32)
        sums[first:first + block_frames] = np.einsum("ij,ij->i", wide, wide, dtype=np.int64)
    power = sums * (PCM16_SCALE * PCM16_SCALE) / frame
    return 10 * np.log10(np.maximum(power, 1e-20)), max(high, -low) * PCM16_SCALE


def frame_energy_db(audio: np.ndarray, frame: int, block_frames: int = _LEVEL_BLOCK_FRAMES) -> np.ndarray:
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

    Frames (100 ms) quieter than `gate_db` below the loudest frame are left out of the level, so long
    silences do not inflate the gain; the gain is capped at `max_gain_db` and so that no sample clips.
    `in_place` scales the given float32 array itself (an hour of audio is 230 MB: one copy fewer).
    """
    loudest = float(np.abs(audio).max()) if audio.size else 0.0
    gain = loudness_gain(frame_energy_db(audio, level_frame(sample_rate)), loudest, target_dbfs, max_gain_db,
                         gate_db, peak)
    audio = audio if in_place and audio.dtype == np.float32 else audio.astype(np.float32, copy=True)
    audio *= np.float32(gain)
    return audio


def loudness_gain(levels_db: np.ndarray, loudest: float, target_dbfs: float, max_gain_db: float, gate_db: float,
                  peak: float = 0.99) -> float:
    """The gain of `normalize_loudness`, from frame levels and the largest absolute sample."""
    active = levels_db[levels_db > levels_db.max() - gate_db]
    level = 10 * np.log10(np.mean(10 ** (active / 10))) if active.size else -200.0
    gain = 10 ** (min(target_dbfs - level, max_gain_db) / 20)
    return peak / loudest if loudest * gain > peak else gain


def session_bounds(audio: np.ndarray, sample_rate: int, max_seconds: float,
                   search_seconds: float) -> list[tuple[int, int]]:
    """Split points for recordings longer than `max_seconds`: [(first, last), ...] in samples.

    Each cut lies in the last `search_seconds` before the limit, at the quietest second there (the middle
    of the longest silence, in practice), so no session exceeds `max_seconds` and speech is rarely cut.
    """
    frame = level_frame(sample_rate)
    return session_bounds_from_levels(frame_energy_db(audio, frame), frame, len(audio), sample_rate, max_seconds,
                                      search_seconds)


def level_frame(sample_rate: int) -> int:
    """Samples in the 100 ms frames whose levels drive loudness and session cuts."""
    return max(1, sample_rate // 10)


def session_bounds_from_levels(levels: np.ndarray, frame: int, num_samples: int, sample_rate: int,
                               max_seconds: float, search_seconds: float) -> list[tuple[int, int]]:
    """`session_bounds` from precomputed frame levels (dB), so a long file need not be in memory."""
    limit = int(max_seconds * sample_rate)
    if num_samples <= limit:
        return [(0, num_samples)]
    smooth = np.convolve(levels, np.ones(10) / 10, mode="same")
    bounds, first = [], 0
    while num_samples - first > limit:
        lo = max(first + 1, first + limit - int(search_seconds * sample_rate)) // frame
        hi = (first + limit) // frame
        hi = min(hi, len(smooth))
        cut = (lo + int(np.argmin(smooth[lo:hi]))) * frame if hi > lo else first + limit
        cut = min(max(cut, first + 1), first + limit)
        bounds.append((first, cut))
        first = cut
    bounds.append((first, num_samples))
    return bounds
