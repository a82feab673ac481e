"""How audio travels between the Ray stages: 16-bit PCM on libsndfile's scale, so what pack encodes from the
PCM is byte for byte the FLAC of the float audio the stages saw, and unchanged audio keeps its PCM."""
from dataclasses import replace

import numpy as np

from pipeline.ray_runner import _StageActor, from_pcm16, from_row, to_batch, to_pcm16
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
