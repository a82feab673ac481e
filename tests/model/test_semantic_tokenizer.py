import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from model.hf_folder import ModelFolderError
from model.semantic_tokenizer import SemanticTokenizer, WhisperVQEncoder, token_count, whisper_vq_config
from model.tiny_folders import TINY_TOKENIZER_CONFIG, write_tiny_semantic_tokenizer
from pipeline.shards.schema import expected_token_count
from tests.model.conftest import noise_clip


@pytest.fixture(scope="module")
def tokenizer(tokenizer_folder):
    return SemanticTokenizer.from_folder(tokenizer_folder, batch_size=4)


@pytest.mark.parametrize("seconds", [0.08, 29.99, 30.0, 30.01, 95.0])
def test_token_count_around_chunk_and_frame_boundaries(tokenizer, seconds):
    clip = noise_clip(seconds)
    ids = tokenizer.tokenize([clip])[0]
    per_chunk = [(min(480000, len(clip) - s) - 1) // 1280 + 1 for s in range(0, len(clip), 480000)]
    assert len(ids) == sum(per_chunk) == token_count(len(clip)) == expected_token_count(len(clip), 16000)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < TINY_TOKENIZER_CONFIG["quantize_vocab_size"]
    assert {0.08: 1, 30.0: 375, 95.0: 3 * 375 + 63}.get(seconds, len(ids)) == len(ids)


def test_one_sample_past_a_token_boundary_adds_a_token(tokenizer):
    clip = noise_clip(1.0)
    assert [len(tokenizer.tokenize([clip[:n]])[0]) for n in (1280, 1281, 2560, 2561)] == [1, 2, 2, 3]


def test_random_audio_spreads_over_many_codebook_entries(tokenizer):
    ids = tokenizer.tokenize([noise_clip(20.0)])[0]
    assert len(np.unique(ids)) > 20


def test_a_clip_alone_and_inside_a_batch_gets_the_same_ids(tokenizer):
    clips = [noise_clip(s, seed=i) for i, s in enumerate([3.21, 12.0, 0.5, 41.7, 7.77])]
    alone = [tokenizer.tokenize([c])[0] for c in clips]
    together = tokenizer.tokenize(clips)
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a, t)


def test_tokens_before_a_change_stay_put_beyond_its_4s_block(tokenizer):
    clip = noise_clip(10.0)
    changed = clip.copy()
    changed[int(6.0 * 16000):] = 0.5 * np.sin(np.arange(4 * 16000) * 2 * np.pi * 440 / 16000)  # a tone
    before, after = tokenizer.tokenize([clip, changed])
    # causal convolutions and block-causal attention: the first 4 s block (50 tokens) cannot see 6 s
    np.testing.assert_array_equal(before[:50], after[:50])
    assert (before[75:] != after[75:]).any()


def test_both_released_key_layouts_load_to_the_same_tokenizer(tmp_path, tokenizer, tokenizer_folder):
    prefixed = write_tiny_semantic_tokenizer(tmp_path / "full-checkpoint", prefixed=True)
    clip = noise_clip(5.0)
    np.testing.assert_array_equal(SemanticTokenizer.from_folder(prefixed).tokenize([clip])[0],
                                  tokenizer.tokenize([clip])[0])


def test_folder_problems_are_clear_errors(tmp_path, tokenizer_folder):
    with pytest.raises(ModelFolderError, match="does not exist"):
        SemanticTokenizer.from_folder(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tokenizer_folder / "config.json").read_text())
    from safetensors.torch import load_file, save_file
    state = load_file(str(tokenizer_folder / "model.safetensors"))
    del state["codebook.weight"]
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(ModelFolderError, match="codebook.weight"):
        SemanticTokenizer.from_folder(broken)


def test_features_match_whisper_feature_extractor(tokenizer):
    clip = noise_clip(3.3)  # 52800 samples: padded to 53760, so more than 200 zeros follow the clip
    extractor = WhisperFeatureExtractor(feature_size=128)
    expected = extractor(clip, sampling_rate=16000, padding="longest", pad_to_multiple_of=1280,
                         return_attention_mask=True, return_tensors="np")
    mel, frame_mask = tokenizer.features([clip])
    np.testing.assert_allclose(mel[0].numpy(), expected.input_features[0], atol=2e-4)
    np.testing.assert_array_equal(frame_mask[0].numpy(), expected.attention_mask[0])


def test_without_causal_front_end_and_block_mask_layers_match_transformers_whisper_encoder():
    raw = dict(TINY_TOKENIZER_CONFIG, encoder_causal_convolution=False, quantize_causal_block_size=None)
    config = whisper_vq_config(raw)
    torch.manual_seed(0)
    ours = WhisperVQEncoder(config).eval()
    reference_config = whisper_vq_config(dict(raw, encoder_layers=config.quantize_position))
    reference = WhisperEncoder(reference_config).eval()
    missing = reference.load_state_dict(ours.state_dict(), strict=False).missing_keys
    assert missing == ["layer_norm.weight", "layer_norm.bias"]  # the tokenizer has no final norm
    mel = torch.from_numpy(WhisperFeatureExtractor(feature_size=128)(
        noise_clip(12.0), sampling_rate=16000, return_tensors="np").input_features)
    layer_outputs = []
    for layer in reference.layers:
        layer.register_forward_hook(lambda module, args, output: layer_outputs.append(output[0]))
    with torch.no_grad():
        reference(mel)
        hidden, _ = ours.hidden_states(mel, torch.ones(1, 3000, dtype=torch.long))
    assert len(hidden) == len(layer_outputs) == config.quantize_position
    for index, (a, b) in enumerate(zip(hidden, layer_outputs)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"layer {index}")
