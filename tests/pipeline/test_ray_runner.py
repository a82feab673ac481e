"""How audio travels between the Ray stages: 16-bit PCM on libsndfile's scale, so what pack encodes from the
PCM is byte for byte the FLAC of the float audio the stages saw, and unchanged audio keeps its PCM. How the
outcomes reach the driver: with ticks while none arrives."""
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from pipeline.ray_runner import (
    _StageActor, from_pcm16, from_row, in_order, to_batch, to_pcm16, with_ticks,
)
from pipeline.shards.codec import encode_flac
from pipeline.stages.base import Stage
from pipeline.stages.work import RecordingWork


def test_pcm_transport_gives_the_flac_of_the_float_audio():
    rng = np.random.default_rng(0)
    audio = np.clip(rng.standard_normal(48000).astype(np.float32) * 0.3, -1.3, 1.3)
    audio[:4] = [1.0, -1.0, 1.5, 0.4 / 32768]
    pcm = to_pcm16(audio)
    assert pcm.dtype == np.int16 and list(pcm[:4]) == [32767, -32768, 32767, 0]
    seen = from_pcm16(pcm)  # what a stage works on
    assert np.abs(seen - np.clip(audio, -1, 1)).max() <= 1 / 32768
    assert np.array_equal(to_pcm16(seen), pcm)  # a stage's float audio converts back to the same PCM
    assert encode_flac(pcm, 16000) == encode_flac(seen, 16000) == encode_flac(audio, 16000)


class Enhance(Stage):
    """Adds enhanced audio and keeps the original object as it is."""
    name = "enhance"

    def process(self, work):
        return replace(work, enhanced=work.audio * 0.5)


def test_a_stage_hands_on_the_pcm_of_audio_it_did_not_change():
    pcm = to_pcm16(np.linspace(-0.5, 0.5, 16000, dtype=np.float32))
    actor = _StageActor("enhance", Enhance)
    batch = to_batch([RecordingWork(source="x", recording_id="r", audio=from_pcm16(pcm))])
    out = actor(batch)
    assert out["audio"][0] is batch["audio"][0]  # passed on, not converted again
    assert np.array_equal(out["enhanced"][0], to_pcm16(from_pcm16(pcm) * 0.5))  # new audio converted
    work = from_row(out["work"][0], out["audio"][0], out["enhanced"][0], as_pcm=True)
    assert work.audio is out["audio"][0] and work.enhanced.dtype == np.int16  # pack gets the PCM itself


def slow(items, seconds):
    for item in items:
        time.sleep(seconds)
        if isinstance(item, Exception):
            raise item
        yield item


def test_waiting_for_an_outcome_ticks_and_a_failure_is_raised_to_the_consumer():
    # ticks every 0.2 s: the end arrives right after "b", with 0.2 s to spare for a loaded machine's scheduler
    got = list(with_ticks(slow(["a", "b"], 0.5), every=0.2))
    assert [item for item in got if item is not None] == ["a", "b"]
    assert got.count(None) >= 2 and got[-1] == "b"  # ticks while each one was on its way, none after the end
    ticks = with_ticks(slow(["a", ValueError("stage down")], 0.05), every=1.0)
    assert next(ticks) == "a"
    with pytest.raises(ValueError, match="stage down"):
        next(ticks)


def test_sessions_made_side_by_side_leave_in_order_with_a_bounded_number_under_way():
    made, under_way, most, lock = [], 0, 0, threading.Lock()

    def sessions():
        for i in range(7):
            made.append(i)
            yield i

    def pack(i):
        nonlocal under_way, most
        with lock:
            under_way += 1
            most = max(most, under_way)
        time.sleep(0.05 * (i % 3 == 0))  # some finish out of order
        with lock:
            under_way -= 1
        return i * 10

    done = []
    for result in in_order(pack, sessions(), threads=3):
        assert len(made) - len(done) <= 3  # at most `threads` sessions made and not yet handed on
        done.append(result)
    assert done == [i * 10 for i in range(7)] and 1 < most <= 3
