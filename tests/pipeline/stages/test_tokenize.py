"""The tokenize stage with the real tokenizer code on a tiny random folder in the released layout."""
import numpy as np
import pytest

from jobs.build_models import build_semantic_tokenizer_tiny
from model.semantic_tokenizer import SemanticTokenizer
from pipeline.shards.schema import expected_token_count
from pipeline.stages.tokenize import TokenizeSettings, TokenizeStage
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_semantic_tokenizer_tiny(tmp_path_factory.mktemp("models"))


def test_each_kept_segment_gets_the_tokens_of_its_own_audio(folder):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 40)).astype(np.float32)
    segments = (SegmentDraft(0.0, 2.5, "A"), SegmentDraft(3.0, 4.0, "B", rejection=Rejection("quality", "snr")),
                SegmentDraft(4.2, 35.7, "A"))
    works = [RecordingWork(source=f"{i}.wav", recording_id=f"{i:016d}", audio=audio[i * 8000:], segments=segments)
             for i in range(2)]
    stage = TokenizeStage(TokenizeSettings(model=str(folder), device="cpu", batch_size=3, torch_threads=1),
                          16000)
    stage.setup()
    done = stage.process_batch(works)
    direct = SemanticTokenizer.from_folder(folder)
    for work, out in zip(works, done):
        kept, rejected = [out.segments[0], out.segments[2]], out.segments[1]
        assert rejected.tokens is None
        for seg in kept:
            clip = work.audio[round(seg.start * 16000):round(seg.end * 16000)]
            assert len(seg.tokens) == expected_token_count(len(clip), 16000)
            np.testing.assert_array_equal(seg.tokens, direct.tokenize([clip])[0])
            assert seg.token_model == str(folder)
