"""DNSMOS through the batched scorer gives speechmos' scores on the same clips (the same model files)."""
import numpy as np
import pytest

from pipeline.stages.dnsmos import WINDOW_SAMPLES, DnsmosScorer, clip_windows
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("b", "en-gb", "Please call me when you arrive at the station tomorrow morning."),
         ("a", "en-us+f4", "We measured the signal at three different frequencies.")]


@pytest.fixture(scope="module")
def clips():
    """Speech over noise cut to lengths on both sides of the 9.01 s window and of a whole hop."""
    audio = make_dialog(LINES, seed=1, noise_level=0.01).audio
    return [np.clip(audio[:n], -1, 1) for n in (16000 * 2, 16000 * 9 + 200, 16000 * 10 + 8000, len(audio))]


def test_scores_equal_speechmos_on_the_same_clips(clips):
    import speechmos.dnsmos

    reference = speechmos.dnsmos.run  # Microsoft's package: its own windows, P.808 included
    ours = DnsmosScorer(threads=1, batch_windows=4).score(clips)
    for clip, mine in zip(clips, ours):
        theirs = reference(clip, 16000)
        for name in ("sig", "bak", "ovrl"):
            assert abs(mine[name] - theirs[f"{name}_mos"]) < 0.01, (len(clip), name, mine, theirs)
    assert len(clip_windows(clips[-1])) > 1  # the long clip is scored over several hopped windows


def test_windows_are_speechmos_windows():
    short = np.linspace(-0.5, 0.5, 16000 * 3, dtype=np.float32)
    windows = clip_windows(short)
    assert windows.shape == (3, WINDOW_SAMPLES)  # doubled until a window is full: 3 -> 6 -> 12 s, 3 hops of 1 s
    assert np.array_equal(windows[0][:len(short)], short) and np.array_equal(windows[0][len(short):2 * len(short)],
                                                                             short)
    with pytest.raises(ValueError, match="empty"):
        clip_windows(np.zeros(0, dtype=np.float32))
