import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from model.semantic_tokenizer import SemanticTokenizer
from model.tiny_folders import write_tiny_whisper
from model.whisper_features import WhisperFeatureEncoder
from tests.model.conftest import noise_clip


@pytest.fixture(scope="module")
def features(whisper_folder):
    return WhisperFeatureEncoder.from_folder(whisper_folder)


def test_features_match_transformers_whisper_model_encoder(features, whisper_folder):
    clip = noise_clip(9.7)
    reference = WhisperModel.from_pretrained(whisper_folder).encoder.eval()
    mel = WhisperFeatureExtractor(feature_size=128)(clip, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        expected = reference(mel).last_hidden_state[0]
        ours = features([clip])[0]
    tokens = (len(clip) - 1) // 1280 + 1
    d = reference.config.d_model
    assert ours.shape == (tokens, 4 * d)
    # token k is frames 4k..4k+3 side by side
    torch.testing.assert_close(ours, expected[: 4 * tokens].reshape(tokens, 4 * d), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[3, d:2 * d], expected[13], atol=1e-5, rtol=1e-5)


def test_feature_frames_line_up_with_semantic_tokens(features, tokenizer_folder):
    tokenizer = SemanticTokenizer.from_folder(tokenizer_folder)
    clips = [noise_clip(s, seed=i) for i, s in enumerate([0.08, 4.5, 30.0, 31.3, 65.0])]
    with torch.no_grad():
        feats = features(clips)
    assert [f.shape[0] for f in feats] == [len(ids) for ids in tokenizer.tokenize(clips)]


def test_both_key_prefixes_load_the_same_encoder(tmp_path, features):
    other = WhisperFeatureEncoder.from_folder(write_tiny_whisper(tmp_path / "cg", conditional_generation=True))
    clip = noise_clip(2.0)
    with torch.no_grad():
        torch.testing.assert_close(other([clip])[0], features([clip])[0])


def test_trainable_flag_decides_whether_gradients_reach_the_encoder(whisper_folder):
    encoder = WhisperFeatureEncoder.from_folder(whisper_folder, trainable=False)
    out = encoder([noise_clip(1.0)])[0]
    assert not out.requires_grad and not any(p.requires_grad for p in encoder.parameters())
    encoder.set_trainable(True)
    encoder([noise_clip(1.0)])[0].square().mean().backward()
    assert encoder.encoder.conv1.weight.grad is not None and encoder.encoder.layers[0].fc1.weight.grad is not None
    assert not encoder.encoder.embed_positions.weight.requires_grad
