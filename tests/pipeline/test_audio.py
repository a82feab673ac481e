"""Decode and standardise on real files made with sox/ffmpeg, and every kind of bad input."""
import subprocess

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import (
    PCM16_SCALE, DecodeError, decode_audio_file, frame_energy_db, levels_of, normalize_loudness,
    scaled_pcm16, session_bounds,
)
from pipeline.synthetic import speak


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    """Two seconds of espeak speech, stereo at 44.1 kHz."""
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    mono = speak("Testing one two three, this is a decode test.", "en-us", sample_rate=44100)
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), 44100)
    return path


@pytest.mark.parametrize("suffix, args", [(".flac", []), (".mp3", ["-b:a", "64k"]), (".opus", ["-b:a", "32k"]),
                                          (".m4a", ["-c:a", "aac"])])
def test_any_ffmpeg_format_decodes_to_16k_mono(speech_wav, tmp_path, suffix, args):
    path = tmp_path / f"speech{suffix}"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(speech_wav), *args, str(path)], check=True)
    decoded = decode_audio_file(str(path), 16000)
    original = sf.info(speech_wav)
    assert decoded.samples.ndim == 1 and decoded.samples.dtype == np.float32
    assert decoded.sample_rate == 16000
    assert decoded.seconds == pytest.approx(original.duration, abs=0.1)
    assert decoded.original_sample_rate in (44100, 48000)  # opus always decodes at 48 kHz
    assert decoded.original_channels == 2


def ffmpeg_samples(path, start=None, stop=None) -> np.ndarray:
    from torchcodec.decoders import AudioDecoder

    decoder = AudioDecoder(str(path), sample_rate=16000, num_channels=1)
    return decoder.get_samples_played_in_range(start or 0.0, stop).data.numpy()[0]


@pytest.mark.parametrize("name, sox_args", [("pcm16.wav", ["-b", "16"]), ("pcm24.flac", ["-b", "24"]),
                                            ("float.wav", ["-e", "floating-point", "-b", "32"]),
                                            ("pcm16.flac", ["-b", "16"])])
def test_mono_files_at_the_working_rate_read_by_libsndfile_give_ffmpegs_samples(tmp_path, monkeypatch, name,
                                                                                 sox_args):
    from pipeline.audio import AudioFile

    monkeypatch.setattr("pipeline.audio._NATIVE_BLOCK", 30_000)  # reads that end inside a block, and across

    path = tmp_path / name
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", *sox_args, str(path), "synth", "5", "pinknoise",
                    "vol", "0.5"], check=True)
    audio_file = AudioFile(str(path), 16000)
    assert audio_file.native and audio_file.header_seconds == 5.0
    assert np.array_equal(audio_file.read(0.0, None), ffmpeg_samples(path))
    assert np.array_equal(audio_file.read(1.25, 3.5), ffmpeg_samples(path, 1.25, 3.5))
    assert np.array_equal(audio_file.read(4.5, 9.0), ffmpeg_samples(path, 4.5, 9.0))  # past the end: what is there
    assert audio_file.read(6.0, 7.0).size == 0


def test_truncated_wav_and_files_that_need_ffmpeg(tmp_path, speech_wav):
    from pipeline.audio import AudioFile

    whole = tmp_path / "whole.wav"
    sf.write(whole, np.linspace(-0.5, 0.5, 32000, dtype=np.float32), 16000, subtype="PCM_16")
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(whole.read_bytes()[:44 + 2 * 20000])  # the header still says 32000 samples
    assert np.array_equal(AudioFile(str(truncated), 16000).read(0.0, None), ffmpeg_samples(truncated))
    at_44k = tmp_path / "mono44k.wav"
    sf.write(at_44k, sf.read(speech_wav)[0][:, 0], 44100)
    # FFmpeg downmixes the stereo file and resamples the 44.1 kHz one
    assert not AudioFile(str(speech_wav), 16000).native and not AudioFile(str(at_44k), 16000).native


def bad(tmp_path, name, content=None):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda d: bad(d, "empty.wav", b""), "empty"),
    (lambda d: bad(d, "text.wav", b"this is not audio at all " * 40), "cannot decode"),
    (lambda d: bad(d, "folder.wav"), "is a directory"),
    (lambda d: str(d / "missing.flac"), "does not exist"),
])
def test_bad_inputs_raise_decode_errors(tmp_path, make, message):
    with pytest.raises(DecodeError, match=message):
        decode_audio_file(make(tmp_path), 16000)


def test_zero_length_and_nan_audio_are_refused(tmp_path):
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DecodeError, match="zero-length|cannot decode"):
        decode_audio_file(str(zero), 16000)
    nan = tmp_path / "nan.wav"
    audio = np.full(16000, 0.1, dtype=np.float32)
    audio[100:200] = np.nan
    sf.write(nan, audio, 16000, subtype="FLOAT")
    with pytest.raises(DecodeError, match="NaN"):
        decode_audio_file(str(nan), 16000)


def test_loudness_normalisation_reaches_the_target_and_never_clips():
    rng = np.random.default_rng(0)
    quiet = np.concatenate([0.01 * rng.standard_normal(16000), np.zeros(32000)]).astype(np.float32)
    out = normalize_loudness(quiet, 16000, target_dbfs=-23, max_gain_db=40, gate_db=40)
    active = out[:16000]
    assert 20 * np.log10(np.sqrt(np.mean(active**2))) == pytest.approx(-23, abs=0.5)  # silence left out
    loud = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.3
    assert np.abs(normalize_loudness(loud, 16000, target_dbfs=0, max_gain_db=40, gate_db=40)).max() <= 0.99


def test_long_recordings_split_at_the_quiet_stretch():
    sr = 1000  # small rate keeps the test fast; the function is rate-agnostic
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(100 * sr)).astype(np.float32)
    audio[52 * sr:55 * sr] = 0.0  # the only silence inside the search window
    bounds = session_bounds(audio, sr, max_seconds=60, search_seconds=20)
    assert len(bounds) == 2 and bounds[0][0] == 0 and bounds[-1][1] == len(audio)
    assert 52 * sr <= bounds[0][1] <= 55 * sr and bounds[0][1] == bounds[1][0]
    assert session_bounds(audio, sr, max_seconds=200, search_seconds=20) == [(0, len(audio))]


def test_sessions_never_exceed_the_maximum_even_without_silence():
    sr = 1000
    audio = np.ones(250 * sr, dtype=np.float32) * 0.2
    bounds = session_bounds(audio, sr, max_seconds=60, search_seconds=30)
    assert all(last - first <= 60 * sr for first, last in bounds)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_frame_energy_of_a_full_scale_square_is_0_dbfs():
    assert frame_energy_db(np.ones(1600, dtype=np.float32), 160) == pytest.approx(np.zeros(10))


# 10-sample frames (sr 100): blocks of 4,096 frames with few samples; 1,600-sample frames (16 kHz) at full scale
@pytest.mark.parametrize("num_samples, sr", [(5, 100), (100_003, 100), (2 * 4096 * 10, 100), (160_005, 16000)])
def test_levels_of_16_bit_pcm_are_those_of_its_float_audio_to_the_bit(num_samples, sr):
    pcm = np.random.default_rng(1).integers(-32768, 32768, num_samples).astype(np.int16)
    pcm[-3200:-1600] = -32768  # a frame of the largest square
    pcm[:3] = -32768  # the loudest sample is the most negative one
    levels, count, loudest = levels_of(pcm, sr)
    want_levels, want_count, want_loudest = levels_of(pcm * np.float32(PCM16_SCALE), sr)
    assert np.array_equal(levels, want_levels) and count == want_count and loudest == want_loudest == 1.0


def test_pcm_with_a_gain_is_the_pcm_of_its_float_audio_with_that_gain():
    pcm = np.random.default_rng(2).integers(-32768, 32768, 300_000).astype(np.int16)
    for gain in (0.37, 1.0, 3.1623, 40.0):  # 40: most samples clip
        float_audio = pcm * np.float32(PCM16_SCALE)
        float_audio *= np.float32(gain)
        assert np.array_equal(scaled_pcm16(pcm, gain), scaled_pcm16(float_audio, 1 / PCM16_SCALE))
        # in place over a slice of a longer buffer (decode's sessions), across several 1 M-sample blocks
        buffer = np.concatenate([pcm] * 8)
        scaled_pcm16(buffer[1000:-1000], gain, out=buffer[1000:-1000])
        want = np.concatenate([pcm] * 8)
        assert np.array_equal(buffer[1000:-1000], scaled_pcm16(want[1000:-1000], gain))
        assert np.array_equal(buffer[:1000], want[:1000]) and np.array_equal(buffer[-1000:], want[-1000:])
