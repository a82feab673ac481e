"""The decode stage: long files split into sessions, decoded in one read or one session at a time, the
same samples as a whole-file decode either way; skipped sessions; failures recorded."""
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import PCM16_SCALE, decode_audio_file, scaled_pcm16
from pipeline.shards.schema import recording_id_for
from pipeline.stages.decode import DecodeSettings, decode_sessions

CFG = DecodeSettings(max_session_minutes=1.0, split_search_seconds=20, scan_block_seconds=7.3)
ONE_READ, TWO_PASSES = CFG, replace(CFG, whole_file_minutes=0)  # the 150 s file: decoded whole, or scanned then read


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """150 s of band-limited noise at 44.1 kHz with silences at 50-53 s and 105-108 s.

    Band-limited (below ~4 kHz) because a decoder started mid-file resamples the top of the band a little
    differently from one started at zero; the content must agree, not the resampler's edge.
    """
    rate = 44100
    noise = np.random.default_rng(0).standard_normal(150 * rate)
    audio = (0.2 * np.convolve(noise, np.ones(10) / 10, mode="same")).astype(np.float32)
    audio[50 * rate:53 * rate] = 0.0
    audio[105 * rate:108 * rate] = 0.0
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, audio, rate)
    return str(path)


@pytest.mark.parametrize("cfg", [ONE_READ, TWO_PASSES], ids=["one_read", "two_passes"])
def test_long_file_splits_at_silences_into_sessions(long_file, cfg):
    works = list(decode_sessions(long_file, cfg, 16000))
    assert [w.recording_id for w in works] == [recording_id_for(long_file, i) for i in range(3)]
    assert works[0].offset == 0.0 and 50 <= works[1].offset <= 53 and 105 <= works[2].offset <= 108
    assert all(len(w.audio) <= 60 * 16000 for w in works)
    whole = decode_audio_file(long_file, 16000).samples
    joined = np.concatenate([w.audio for w in works])
    assert len(joined) == len(whole) and works[0].source_seconds == pytest.approx(150.0, abs=0.01)
    slices = [whole[round(w.offset * 16000):][:len(w.audio)] for w in works]
    gains = [np.sqrt(np.mean(w.audio**2) / np.mean(ref**2)) for w, ref in zip(works, slices)]
    assert max(gains) / min(gains) == pytest.approx(1.0, abs=0.01)  # one loudness gain for the whole file
    for w, ref in zip(works, slices):  # the same content at the same time (lag 0)
        assert np.corrcoef(w.audio, ref)[0, 1] > 0.9
    assert works[0].original_sample_rate == 44100


def test_done_sessions_are_skipped(long_file):
    skip = {recording_id_for(long_file, 0), recording_id_for(long_file, 2)}
    assert [w.session for w in decode_sessions(long_file, CFG, 16000, skip)] == [1]


def test_one_read_and_two_passes_cut_the_same_sessions(long_file):
    one, two = (list(decode_sessions(long_file, cfg, 16000)) for cfg in (ONE_READ, TWO_PASSES))
    assert [(w.recording_id, w.offset, len(w.audio)) for w in one] == [(w.recording_id, w.offset, len(w.audio))
                                                                        for w in two]
    for a, b in zip(one, two):  # the same gain and content; a decoder started mid-file resamples its edge anew
        assert np.sqrt(np.mean(a.audio ** 2) / np.mean(b.audio ** 2)) == pytest.approx(1.0, abs=0.01)
        assert np.corrcoef(a.audio, b.audio)[0, 1] > 0.9


@pytest.fixture(scope="module")
def long_pcm16_file(long_file, tmp_path_factory):
    """The long file as a 16-bit WAV at the working rate: libsndfile reads it as it is."""
    path = tmp_path_factory.mktemp("long16") / "long16.wav"
    sf.write(path, decode_audio_file(long_file, 16000).samples, 16000, subtype="PCM_16")
    return str(path)


@pytest.mark.parametrize("which", ["pcm16_file", "ffmpeg_file"])
def test_pcm16_sessions_are_the_float_sessions_as_pcm(long_file, long_pcm16_file, which):
    """`pcm16` (a job with no model stage): the same sessions, each the PCM of the float audio, whether the
    file's own 16-bit PCM is scaled (no float copy) or FFmpeg's floats are converted."""
    source = long_pcm16_file if which == "pcm16_file" else long_file
    floats, pcms = (list(decode_sessions(source, ONE_READ, 16000, pcm16=pcm16)) for pcm16 in (False, True))
    assert [(w.recording_id, w.offset) for w in pcms] == [(w.recording_id, w.offset) for w in floats]
    assert len(pcms) == 3 and {w.audio.dtype for w in pcms} == {np.dtype(np.int16)}
    for p, f in zip(pcms, floats):
        assert np.array_equal(p.audio, scaled_pcm16(f.audio, 1 / PCM16_SCALE))
        assert 0 < np.abs(p.audio).max() < 32767  # the gain applied, nothing clipped


def test_short_files_keep_the_plain_recording_id(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, (0.1 * np.ones(16000)).astype(np.float32), 16000)
    (work,) = decode_sessions(str(path), CFG, 16000)
    assert work.recording_id == recording_id_for(str(path)) and work.session is None and len(work.audio) == 16000


def test_an_undecodable_file_is_one_failed_work(tmp_path):
    path = tmp_path / "x.wav"
    path.write_bytes(b"not audio" * 100)
    (work,) = decode_sessions(str(path), CFG, 16000)
    assert work.failure.stage == "decode" and "cannot decode" in work.failure.message and work.audio is None
