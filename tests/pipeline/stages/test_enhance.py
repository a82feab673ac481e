"""The enhancement stage through demucs' own loader, on a tiny random HTDemucs repo folder."""
import numpy as np
import pytest

from jobs.build_models import DEMUCS_TINY_BAG, build_demucs_tiny
from pipeline.stages.enhance import EnhanceSettings, EnhanceStage
from pipeline.stages.work import RecordingWork


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_demucs_tiny(tmp_path_factory.mktemp("models"))


def stage(repo, **changes):
    cfg = {**dict(model=DEMUCS_TINY_BAG, repo=str(repo), device="cpu", torch_threads=1), **changes}
    s = EnhanceStage(EnhanceSettings(**cfg), 16000)
    s.setup()
    return s


def test_repo_folder_has_the_demucs_layout(repo):
    assert (repo / f"{DEMUCS_TINY_BAG}.yaml").is_file() and len(list(repo.glob("*.th"))) == 1


def test_enhanced_copy_has_the_original_length_and_keeps_the_original(repo):
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 5)).astype(np.float32)
    work = RecordingWork(source="x.wav", recording_id="0123456789abcdef", audio=audio)
    out = stage(repo).process(work)
    assert out.audio is audio  # the original is kept as is
    assert out.enhanced.shape == audio.shape and out.enhanced.dtype == np.float32
    assert np.isfinite(out.enhanced).all() and np.abs(out.enhanced).max() <= 1.0
    assert not np.allclose(out.enhanced, audio)


def test_a_missing_stem_is_a_clear_error(repo):
    with pytest.raises(ValueError, match="no 'speech' stem"):
        stage(repo, stem="speech")
