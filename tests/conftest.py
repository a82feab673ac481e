"""Shared fixtures: small datasets built from generated speech (espeak-ng), with known content."""
from __future__ import annotations

import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.local_s3 import start_local_s3
from pipeline import __version__
from pipeline.shards import (
    AsrInfo, AudioInfo, PipelineInfo, Quality, RejectedRecord, SegmentRecord, SegmentSample, ShardWriter, TokenInfo,
    Word, expected_token_count, recording_id_for,
)
from pipeline.synthetic import make_dialog

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

SAMPLE_RATE = 16000
VOICES = [("alice", "en-us+f3"), ("bob", "en-gb"), ("carol", "en-us+f4")]
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Please call me when you arrive.",
             "We measured the signal twice.", "Okay.", "The library closes at nine on weekdays."]
PIPELINE = PipelineInfo.for_config(__version__, {"test": True})


def dialog_samples(source: str, dialog, *, enhanced: bool = True, tokens: bool = True,
                   min_seconds: float = 0.8) -> tuple[list[SegmentSample], list[RejectedRecord]]:
    """Segments of a generated dialog as samples (one per turn), short turns as rejected rows."""
    recording_id = recording_id_for(source)
    rng = np.random.default_rng(zlib.crc32(source.encode()))  # stable across runs, unlike hash()
    samples, rejected, previous_end = [], [], None
    for index, turn in enumerate(dialog.turns):
        first, last = round(turn.start * SAMPLE_RATE), round(turn.end * SAMPLE_RATE)
        audio = dialog.audio[first:last]
        n_tokens = expected_token_count(len(audio), SAMPLE_RATE)
        words, t = [], first / SAMPLE_RATE
        for w in turn.text.split():  # evenly spread word times: enough to exercise the schema
            step = (last - first) / SAMPLE_RATE / len(turn.text.split())
            words.append(Word(w, round(t, 3), round(t + step, 3), 0.9))
            t += step
        record = SegmentRecord(
            recording_id=recording_id, source=source, segment_index=index, start=first / SAMPLE_RATE,
            end=last / SAMPLE_RATE, gap_before=None if previous_end is None else first / SAMPLE_RATE - previous_end,
            speaker=turn.speaker, language="en", language_prob=0.98, text=turn.text, words=tuple(words),
            asr=AsrInfo(model="test", avg_logprob=-0.2, no_speech_prob=0.01),
            quality=Quality(dnsmos_sig=3.5, dnsmos_bak=4.0, dnsmos_ovrl=3.2, snr_db=25.0, speech_ratio=0.9,
                            chars_per_sec=len(turn.text) / ((last - first) / SAMPLE_RATE)),
            audio=AudioInfo(sample_rate=SAMPLE_RATE, num_samples=last - first, has_enhanced=enhanced),
            tokens=TokenInfo(count=n_tokens, model="test-random") if tokens else None, pipeline=PIPELINE)
        previous_end = record.end
        if record.duration < min_seconds:
            rejected.append(RejectedRecord(source=source, recording_id=recording_id, key=record.key,
                                           stage="filter", reason="too_short", duration=record.duration))
            continue
        samples.append(SegmentSample(
            record=record, audio=audio, enhanced=(0.5 * audio) if enhanced else None,
            tokens=rng.integers(0, 16384, n_tokens).astype(np.int32) if tokens else None))
    return samples, rejected


@pytest.fixture(scope="session")
def dialogs():
    """Three generated dialogs (about 10 s each) with two or three voices."""
    out = []
    for i in range(3):
        lines = [(VOICES[(i + t) % (2 + i % 2)][0], VOICES[(i + t) % (2 + i % 2)][1],
                  SENTENCES[(i * 2 + t) % len(SENTENCES)]) for t in range(4)]
        out.append((f"/data/raw/dialog-{i}.wav", make_dialog(lines, sample_rate=SAMPLE_RATE, seed=i,
                                                             noise_level=0.002)))
    return out


def write_dataset(root: Path, dialogs, **writer_args) -> Path:
    writer_args = {"target_bytes": 10_000_000, "target_samples": 5, **writer_args}
    with ShardWriter(root, sample_rate=SAMPLE_RATE, config={"test": True}, **writer_args) as writer:
        for source, dialog in dialogs:
            writer.add_recording(*dialog_samples(source, dialog))
    return root


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory, dialogs) -> Path:
    """A dataset written once per session; never modify it (copy it with `dataset_copy`)."""
    return write_dataset(tmp_path_factory.mktemp("built") / "ds", dialogs)


@pytest.fixture
def dataset_copy(built_dataset, tmp_path) -> Path:
    """A private copy of the session dataset, free to damage."""
    return Path(shutil.copytree(built_dataset, tmp_path / "ds"))


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    env: dict

    def url(self, name: str) -> str:
        """A fresh prefix in the test bucket, as a user would write it."""
        return f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """One S3-compatible server for the whole run (bench/local_s3.py); the AWS_* environment of this
    process, its subprocesses and the Ray cluster the job tests start points at it."""
    saved = dict(os.environ)
    with open(tmp_path_factory.mktemp("s3") / "moto.log", "wb") as log:
        server = start_local_s3("audiomill-tests", log)
        try:
            yield S3Server(server.endpoint, server.bucket, server.env)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            server.stop()
