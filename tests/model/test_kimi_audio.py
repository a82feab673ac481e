"""The model on megatron-core in one CPU process: embedding rule, heads, losses, packing, sizes."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import kimi_audio_7b, kimi_audio_tiny, parameter_count
from model.kimi_audio import LossTargets, build_model, causal_mask


@pytest.fixture(scope="module")
def model(megatron):
    torch.manual_seed(0)
    return build_model(kimi_audio_tiny()).eval()


def batch(seed=0, b=2, s=24, vocab=1024):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, s), generator=g), torch.randint(0, vocab, (b, s), generator=g)


def test_7b_preset_has_the_released_parameter_count_without_allocating():
    # the released checkpoint: 9.77B parameters without Whisper (facts B2)
    assert abs(parameter_count(kimi_audio_7b()) - 9.77e9) < 0.01e9


def test_pipeline_layouts_split_the_shared_layers_or_say_why_not():
    assert kimi_audio_7b(pipeline_parallel=2).shared_layers_per_stage() == [11, 11]
    assert kimi_audio_7b(pipeline_parallel=2, last_stage_shared_layers=5).shared_layers_per_stage() == [17, 5]
    assert kimi_audio_7b(pipeline_parallel=4, first_stage_shared_layers=4,
                         last_stage_shared_layers=2).shared_layers_per_stage() == [4, 8, 8, 2]
    for bad in (dict(pipeline_parallel=4), dict(pipeline_parallel=2, last_stage_shared_layers=22),
                dict(pipeline_parallel=3, last_stage_shared_layers=3)):
        with pytest.raises(ValueError, match="do not split over"):
            kimi_audio_7b(**bad).transformer_config(22, pipelined=True)


def test_parameter_count_formula_matches_the_built_model(model):
    assert parameter_count(model.cfg) == sum(p.numel() for p in model.parameters())


def test_train_deterministic_reaches_megatron(megatron, model):
    # megatron's deterministic embedding: indexing instead of F.embedding, whose backward adds atomically
    assert model.embedding.deterministic_mode is False
    assert build_model(kimi_audio_tiny(deterministic=True)).embedding.deterministic_mode is True


def test_the_local_spec_keeps_its_own_final_norms_where_transformer_engine_is_installed(megatron, monkeypatch):
    # megatron-core gives a block built from a layer spec the norm it picked at import, Transformer Engine's
    # whenever TE imports (its LayerNormImpl), and TE's RMSNorm fails on CPU: as if TE were installed
    from megatron.core.transformer import transformer_block

    class TransformerEngineNorm(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            raise AssertionError("Transformer Engine's norm in a local-spec model")

    monkeypatch.setattr(transformer_block, "LayerNormImpl", TransformerEngineNorm)
    local = build_model(kimi_audio_tiny(spec="local"))
    assert isinstance(local.text_head.final_layernorm, torch.nn.RMSNorm)
    assert isinstance(local.audio_head.final_layernorm, torch.nn.RMSNorm)


def test_a_bfloat16_model_has_every_parameter_in_bfloat16(megatron, whisper_folder):
    # megatron's distributed optimizer (GPUs) saves a group mixing float32 and bfloat16 parameters wrongly:
    # torch's RMSNorm (no Transformer Engine) and Whisper would otherwise stay float32
    from model.whisper_features import WhisperFeatureEncoder

    torch.manual_seed(0)
    whisper = WhisperFeatureEncoder.from_folder(whisper_folder, trainable=True)
    bf16 = build_model(kimi_audio_tiny(params_dtype="bfloat16"), whisper=whisper)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    assert any("layernorm" in name for name, _ in bf16.named_parameters())


def test_continuous_positions_add_the_adaptor_and_scale_by_sqrt2(model):
    audio, text = batch()
    mask = torch.zeros_like(audio, dtype=torch.bool)
    mask[0, 3:8], mask[1, 10:12] = True, True
    features = torch.randn(int(mask.sum()), model.cfg.adaptor_input_dim)
    with torch.no_grad():
        got = model.embed(audio, text, mask, features)
        e_audio, e_text = model.embedding(audio), model.embedding(text)
        expected = e_audio + e_text
        expected[mask] = (e_audio[mask] + model.adaptor(features)) * math.sqrt(2) + e_text[mask]
    torch.testing.assert_close(got, expected)


def test_feature_rows_must_match_continuous_positions(model):
    audio, text = batch()
    mask = torch.zeros_like(audio, dtype=torch.bool)
    mask[0, :4] = True
    with pytest.raises(ValueError, match="4 continuous positions but 3 feature rows"):
        model(audio, text, continuous_mask=mask, whisper_features=torch.randn(3, model.cfg.adaptor_input_dim))


def test_losses_are_the_masked_cross_entropies_of_the_two_heads(model):
    audio, text = batch()
    labels_a, labels_t = batch(seed=1)
    mask_a = torch.rand(audio.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    mask_t = ~mask_a
    with torch.no_grad():
        logits = model(audio, text)
        out = model(audio, text, targets=LossTargets(labels_a, labels_t, mask_a, mask_t))
    ce_a = F.cross_entropy(logits.audio_logits.flatten(0, 1), labels_a.flatten(), reduction="none").view_as(labels_a)
    ce_t = F.cross_entropy(logits.text_logits.flatten(0, 1), labels_t.flatten(), reduction="none").view_as(labels_t)
    torch.testing.assert_close(out.audio_loss, (ce_a * mask_a).sum() / (mask_a.sum() + 1e-4))
    torch.testing.assert_close(out.text_loss, (ce_t * mask_t).sum() / (mask_t.sum() + 1e-4))
    torch.testing.assert_close(out.loss, out.audio_loss + out.text_loss)
    # the heads are separate: the audio logits are not the text logits
    assert not torch.allclose(logits.audio_logits, logits.text_logits)


def test_packed_samples_see_only_themselves(model):
    """Two samples in one row, block-diagonal causal mask, positions restarting: each as if alone."""
    a1, t1 = batch(seed=3, b=1, s=10)
    a2, t2 = batch(seed=4, b=1, s=14)
    packed_a, packed_t = torch.cat([a1, a2], 1), torch.cat([t1, t2], 1)
    mask = causal_mask(24, "cpu").clone()
    mask[..., 10:, :10] = True
    positions = torch.cat([torch.arange(10), torch.arange(14)])[None]
    with torch.no_grad():
        packed = model(packed_a, packed_t, position_ids=positions, attention_mask=mask)
        first, second = model(a1, t1), model(a2, t2)
    torch.testing.assert_close(packed.text_logits[:, :10], first.text_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.audio_logits[:, 10:], second.audio_logits, atol=1e-5, rtol=1e-5)
