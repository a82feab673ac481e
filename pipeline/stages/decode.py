"""Stage 1, decode and standardise: any FFmpeg format to mono float32 at the working rate (or its 16-bit
PCM, for a job that only packs it), loudness normalised; recordings longer than the session maximum are
split at their quietest stretches."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Collection, Iterator

import numpy as np

from pipeline.audio import (
    PCM16_SCALE, AudioFile, level_frame, levels_of, loudness_gain, scaled_pcm16, session_bounds_from_levels,
)
from pipeline.capacity import TaskResources
from pipeline.shards.schema import recording_id_for
from pipeline.stages.base import failed
from pipeline.stages.work import RecordingWork

STAGE = "decode"


@dataclass(frozen=True)
class DecodeSettings:
    """The `decode` section. Sessions: recordings longer than `max_session_minutes` are cut at their
    quietest stretch within `split_search_seconds` before the limit. A file whose header says it is at
    most `whole_file_minutes` long is decoded once, in one read, and its sessions cut from memory (float32
    at 16 kHz: 230 MB an hour); a longer one is scanned `scan_block_seconds` at a time for its levels and
    each session decoded again, so memory stays one session. Loudness: the active part (frames within
    `loudness_gate_db` of the loudest) is brought to `loudness_target_dbfs` RMS, by at most `max_gain_db`."""
    max_session_minutes: float = 60.0
    split_search_seconds: float = 120.0
    whole_file_minutes: float = 120.0
    scan_block_seconds: float = 300.0
    loudness_target_dbfs: float = -23.0
    loudness_gate_db: float = 40.0
    max_gain_db: float = 30.0

    def problems(self) -> list[str]:
        problems = []
        if not self.max_session_minutes > 0 or not self.scan_block_seconds > 0:
            problems.append("decode: max_session_minutes and scan_block_seconds must be > 0")
        if not 0 <= self.split_search_seconds < self.max_session_minutes * 60:
            problems.append(f"decode.split_search_seconds={self.split_search_seconds:g} must be >= 0 and shorter "
                            f"than a session ({self.max_session_minutes:g} minutes)")
        if self.whole_file_minutes < 0:
            problems.append(f"decode.whole_file_minutes={self.whole_file_minutes:g} must be >= 0 "
                            f"(0: always two passes)")
        if self.loudness_gate_db <= 0 or self.max_gain_db < 0:
            problems.append("decode: loudness_gate_db must be > 0 and max_gain_db >= 0")
        return problems


# a 120-minute file decoded whole (whole_file_minutes), or a 60-minute session: float32 audio and its 16-bit copy
DECODE_RESOURCES = TaskResources(num_cpus=1, memory_mb=3072)


def decode_sessions(source: str, cfg: DecodeSettings, sample_rate: int, skip_recording_ids: Collection[str] = (),
                    storage_options=None, pcm16: bool = False) -> Iterator[RecordingWork]:
    """The sessions of one source still to be done, one at a time, or one failed work.

    A file up to `cfg.whole_file_minutes` long is decoded in one read. A longer one takes two passes: one
    reads it block by block for the levels (loudness and session cuts), the other decodes one session at
    a time, so a 10-hour file costs one session of memory. A URL is read with `storage_options`.
    `pcm16`: the audio as 16-bit PCM on libsndfile's scale (the float32 audio times 32768, rounded), for a
    job where nothing reads the samples before pack: a 16-bit file read whole then never becomes float32.
    """
    whole_id = recording_id_for(source)
    started = time.perf_counter()  # this generator's own time per session (the scan goes to the first)
    try:
        audio_file = AudioFile(source, sample_rate, storage_options)
        header = audio_file.header_seconds
        whole = None  # float32, or 16-bit PCM where pcm16 and the file is stored so
        if header is not None and header <= cfg.whole_file_minutes * 60:
            whole = audio_file.read_pcm16() if pcm16 and audio_file.reads_pcm16 else audio_file.read(0.0, None)
        levels, num_samples, loudest = (levels_of(whole, sample_rate) if whole is not None
                                        else audio_file.scan(cfg.scan_block_seconds))
        gain = loudness_gain(levels, loudest, cfg.loudness_target_dbfs, cfg.max_gain_db, cfg.loudness_gate_db)
        bounds = session_bounds_from_levels(levels, level_frame(sample_rate), num_samples, sample_rate,
                                            cfg.max_session_minutes * 60, cfg.split_search_seconds)
    except Exception as e:  # every decode problem is this input's failure, recorded, never the job's
        yield failed(RecordingWork(source=source, recording_id=whole_id, sample_rate=sample_rate), STAGE, e)
        return
    common = dict(source=source, sample_rate=sample_rate, original_sample_rate=audio_file.original_sample_rate,
                  source_seconds=num_samples / sample_rate)
    split = len(bounds) > 1
    for session, (first, last) in enumerate(bounds):
        recording_id = recording_id_for(source, session) if split else whole_id
        if recording_id in skip_recording_ids:
            continue
        work = RecordingWork(recording_id=recording_id, session=session if split else None,
                             offset=first / sample_rate, **common)
        try:
            if whole is not None and whole.dtype == np.int16:
                # in place: sessions are disjoint and the levels are made, so the file's PCM is not read again,
                # and no fresh session-sized array is faulted in (slow on a VM that hands freed memory back)
                audio = scaled_pcm16(whole[first:last], gain, out=whole[first:last])
            else:
                audio = (whole[first:last] if whole is not None
                         else audio_file.read(first / sample_rate, last / sample_rate)[: last - first])
                if len(audio) < last - first:  # FFmpeg may end a few samples short of the scan's count
                    audio = np.pad(audio, (0, last - first - len(audio)))
                audio *= np.float32(gain)
                if pcm16:
                    audio = scaled_pcm16(audio, 1 / PCM16_SCALE)
        except Exception as e:
            yield failed(work, STAGE, e)
            started = time.perf_counter()
            continue
        yield replace(work, audio=audio, stage_seconds=((STAGE, time.perf_counter() - started),))
        started = time.perf_counter()
