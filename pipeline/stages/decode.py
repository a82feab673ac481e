"""Stage 1, decode and standardise: any FFmpeg format to mono float32 at the working rate, loudness
normalised; recordings longer than the session maximum are split at their quietest stretches."""
from __future__ import annotations

from typing import Collection

from omegaconf import DictConfig

from pipeline.audio import decode_audio_file, normalize_loudness, session_bounds
from pipeline.shards.schema import recording_id_for
from pipeline.stages.base import failed
from pipeline.stages.work import RecordingWork

STAGE = "decode"


def decode_sessions(source: str, cfg: DictConfig, sample_rate: int,
                    skip_recording_ids: Collection[str] = ()) -> list[RecordingWork]:
    """The sessions of one source still to be done, or one failed work when it cannot be decoded.

    `cfg` is the `decode` section: max_session_minutes, split_search_seconds, loudness_target_dbfs,
    max_gain_db, loudness_gate_db.
    """
    whole_id = recording_id_for(source)
    try:
        decoded = decode_audio_file(source, sample_rate)
        audio = normalize_loudness(decoded.samples, sample_rate, cfg.loudness_target_dbfs, cfg.max_gain_db,
                                   cfg.loudness_gate_db, in_place=True)  # the decoded array is ours
        bounds = session_bounds(audio, sample_rate, cfg.max_session_minutes * 60, cfg.split_search_seconds)
    except Exception as e:  # every decode problem is this input's failure, recorded, never the job's
        return [failed(RecordingWork(source=source, recording_id=whole_id, sample_rate=sample_rate), STAGE, e)]
    common = dict(source=source, sample_rate=sample_rate, original_sample_rate=decoded.original_sample_rate,
                  source_seconds=decoded.seconds)
    if len(bounds) == 1:
        return [RecordingWork(recording_id=whole_id, audio=audio, **common)]
    works = []
    for session, (first, last) in enumerate(bounds):
        recording_id = recording_id_for(source, session)
        if recording_id not in skip_recording_ids:
            works.append(RecordingWork(recording_id=recording_id, session=session, offset=first / sample_rate,
                                       audio=audio[first:last], **common))  # a view: serialising copies it
    return works
