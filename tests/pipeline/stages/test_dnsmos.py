"""DNSMOS through the stage's scorer gives speechmos' scores on the same clips (the same model file)."""
import numpy as np
import pytest

from pipeline.stages.dnsmos import WINDOW_SAMPLES, DnsmosScorer, WinogradTrunk, clip_windows, cpu_has_bfloat16, \
    doubled, model_path, window_starts, winograd_available
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("b", "en-gb", "Please call me when you arrive at the station tomorrow morning."),
         ("a", "en-us+f4", "We measured the signal at three different frequencies.")]


@pytest.fixture(scope="module")
def clips():
    """Speech over noise cut to lengths on both sides of the 9.01 s window and of a whole hop."""
    audio = make_dialog(LINES, seed=1, noise_level=0.01).audio
    return [np.clip(audio[:n], -1, 1) for n in (16000 * 2, 16000 * 9 + 200, 16000 * 10 + 8000, len(audio))]


@pytest.fixture(scope="module")
def speechmos_scores(clips):
    import speechmos.dnsmos

    return [speechmos.dnsmos.run(clip, 16000) for clip in clips]  # Microsoft's package: its windows, P.808 too


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_scores_equal_speechmos_on_the_same_clips(clips, speechmos_scores, precision):
    ours = DnsmosScorer(threads=1, precision=precision).score(clips)
    for clip, mine, theirs in zip(clips, ours, speechmos_scores):
        for name in ("sig", "bak", "ovrl"):
            assert abs(mine[name] - theirs[f"{name}_mos"]) < 0.01, (len(clip), name, mine, theirs)
    assert len(clip_windows(clips[-1])) > 1  # the long clip is scored over several hopped windows


@pytest.mark.parametrize("hop,winograd", [(1, True), (3, True), (1, False)])
def test_shared_trunk_gives_every_window_the_whole_models_output(clips, hop, winograd):
    """Each window's raw scores equal the whole model run on that window alone, including windows whose
    trunk crosses a chunk boundary (the long doubled clip) and the edge strips; the clip's trunk through
    NNPACK's Winograd convolutions where torch has them, and through onnxruntime."""
    import onnxruntime as ort

    whole = ort.InferenceSession(model_path(), providers=["CPUExecutionProvider"])
    scorer = DnsmosScorer(threads=1, precision="float32", hop_seconds=hop, winograd=winograd)
    assert isinstance(scorer.run_trunk, WinogradTrunk) == (winograd and winograd_available())
    for clip in clips:
        audio = doubled(clip)
        starts = window_starts(audio, hop)
        expected = whole.run(None, {"input_1": clip_windows(clip, hop)})[0]
        np.testing.assert_allclose(scorer.raw_scores(audio, starts), expected, atol=1e-4)


@pytest.mark.skipif(not winograd_available(), reason="torch has no NNPACK on this CPU")
@pytest.mark.parametrize("nnpack_faster", [True, False])
def test_float32_trunk_is_the_one_that_ran_a_chunk_faster(monkeypatch, nnpack_faster):
    """Left to choose, an actor keeps the trunk that was faster on its timed chunk (AVX2 and AMD cores
    favour NNPACK's Winograd, Intel AVX-512 ones onnxruntime's); the timings are set here, not measured."""
    import pipeline.stages.dnsmos as dnsmos

    monkeypatch.setattr(dnsmos, "chunk_seconds",
                        lambda trunk: 1.0 if isinstance(trunk, WinogradTrunk) == nnpack_faster else 2.0)
    scorer = DnsmosScorer(threads=1, precision="float32")
    assert isinstance(scorer.run_trunk, WinogradTrunk) == nnpack_faster
    assert not isinstance(scorer.run_edges, WinogradTrunk)  # the edge strips stay in onnxruntime


def test_auto_precision_follows_the_cpu():
    assert DnsmosScorer(precision="auto").precision == ("bfloat16" if cpu_has_bfloat16() else "float32")


def test_windows_are_speechmos_windows():
    short = np.linspace(-0.5, 0.5, 16000 * 3, dtype=np.float32)
    windows = clip_windows(short)
    assert windows.shape == (3, WINDOW_SAMPLES)  # doubled until a window is full: 3 -> 6 -> 12 s, 3 hops of 1 s
    assert np.array_equal(windows[0][:len(short)], short) and np.array_equal(windows[0][len(short):2 * len(short)],
                                                                             short)
    with pytest.raises(ValueError, match="empty"):
        clip_windows(np.zeros(0, dtype=np.float32))
