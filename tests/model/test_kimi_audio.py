"""The model on megatron-core in one CPU process: embedding rule, heads, losses, packing, sizes."""
import math

import pytest
import torch
import torch.nn.functional as F

from model.config import kimi_audio_7b, kimi_audio_tiny, parameter_count
from model.kimi_audio import LossTargets, block_causal_mask, build_model, packed_sequences, sample_segments
from tests.model.thd_stand_in import attend_as_transformer_engine


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


def packed_pair():
    """Two samples (10 and 14 positions) alone, and packed in one row of 26 with two positions of padding."""
    (a1, t1), (a2, t2) = batch(seed=3, b=1, s=10), batch(seed=4, b=1, s=14)
    pad = torch.zeros(1, 2, dtype=torch.long)
    packed = torch.cat([a1, a2, pad], 1), torch.cat([t1, t2, pad], 1)
    positions = torch.cat([torch.arange(10), torch.arange(14), torch.zeros(2, dtype=torch.long)])[None]
    documents = torch.tensor([[0] * 10 + [1] * 14 + [-1] * 2])
    return (a1, t1), (a2, t2), packed, positions, documents


def test_packed_samples_see_only_themselves(model):
    """Two samples in one row, each position marked with its sample, positions restarting: each as if alone."""
    first, second, packed, positions, documents = packed_pair()
    with torch.no_grad():
        out = model(*packed, position_ids=positions, document_ids=documents)
        alone_first, alone_second = model(*first), model(*second)
    torch.testing.assert_close(out.text_logits[:, :10], alone_first.text_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.audio_logits[:, 10:24], alone_second.audio_logits, atol=1e-5, rtol=1e-5)


def test_each_position_sees_only_its_own_samples_past():
    documents = torch.tensor([[0, 0, 1, 1, 1, -1, -1], [0, 0, 0, 0, 0, 0, -1]])
    assert sample_segments(documents).tolist() == [[0, 0, 1, 1, 1, 2, 2], [3, 3, 3, 3, 3, 3, 4]]
    mask = block_causal_mask(documents)  # True = masked
    assert mask.shape == (2, 1, 7, 7)
    assert not mask[0, 0, 3, 2] and mask[0, 0, 2, 1] and mask[0, 0, 2, 3]  # own past only; not the sample before
    assert not mask[0, 0, 6, 6] and not mask[0, 0, 6, 5] and mask[0, 0, 5, 4]  # padding: no empty softmax rows
    params = packed_sequences(documents)  # the same segments, as Transformer Engine's attention takes them
    assert params.qkv_format == "thd" and params.cu_seqlens_q.dtype == torch.int32
    assert params.cu_seqlens_q.tolist() == [0, 2, 5, 7, 13, 14] and params.max_seqlen_q == 6


def test_packed_rows_as_one_sequence_give_what_the_block_mask_gives(model, monkeypatch):
    """Transformer Engine's path for packed rows (thd: the rows flattened into one sequence, megatron's rotary
    per segment, the outputs and losses folded back into rows), its attention kernel stood in for on CPU
    (tests.model.thd_stand_in): the same logits and losses as the local spec's block-diagonal mask, for a row
    of two samples and padding next to a row of one sample."""
    _, _, packed, positions, documents = packed_pair()
    other_a, other_t = batch(seed=5, b=1, s=26)
    audio, text = torch.cat([packed[0], other_a]), torch.cat([packed[1], other_t])
    positions = torch.cat([positions, torch.arange(26)[None]])
    documents = torch.cat([documents, torch.zeros(1, 26, dtype=torch.long)])
    labels, real = torch.roll(text, -1, 1), documents >= 0
    targets, inputs = LossTargets(labels, labels, real, real), dict(position_ids=positions, document_ids=documents)
    with torch.no_grad():
        masked, masked_loss = model(audio, text, **inputs), model(audio, text, **inputs, targets=targets)
        attend_as_transformer_engine(model, monkeypatch.setattr)
        flat, flat_loss = model(audio, text, **inputs), model(audio, text, **inputs, targets=targets)
    for name in ("text_logits", "audio_logits"):
        torch.testing.assert_close(getattr(flat, name)[real], getattr(masked, name)[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat_loss.text_token_loss, masked_loss.text_token_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat_loss.loss, masked_loss.loss, atol=1e-5, rtol=1e-5)
