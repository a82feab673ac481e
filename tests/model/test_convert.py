"""Import from HF Qwen2, export to and import from the released Kimi-Audio layout, dist checkpoints."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM, WhisperModel

from model.checkpoint import export_kimi, import_kimi, import_qwen2, load_checkpoint, save_checkpoint
from model.tiny_folders import TINY_QWEN2_CONFIG
from tests.model.conftest import noise_clip


@pytest.fixture(scope="module")
def imported(megatron, qwen2_folder, whisper_folder):
    return import_qwen2(qwen2_folder, text_head_layers=1, audio_head_layers=1, audio_vocab_size=512,
                        whisper_folder=whisper_folder).eval()


def tensors(model):
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_imported_qwen2_gives_the_same_text_logits_as_transformers(imported, qwen2_folder):
    reference = Qwen2ForCausalLM.from_pretrained(qwen2_folder, dtype=torch.float32).eval()
    ids = torch.randint(0, TINY_QWEN2_CONFIG["vocab_size"], (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = imported(text_ids=ids).text_logits
        expected = reference(ids).logits
    assert ours.shape[-1] == TINY_QWEN2_CONFIG["vocab_size"] + 512  # the audio range is appended
    torch.testing.assert_close(ours[..., :expected.shape[-1]], expected, atol=1e-5, rtol=1e-5)


def test_import_grows_the_vocabulary_and_leaves_the_audio_head_random(imported, qwen2_folder):
    qwen = load_file(str(qwen2_folder / "model.safetensors"))
    ours = tensors(imported)
    n = TINY_QWEN2_CONFIG["vocab_size"]
    assert torch.equal(ours["embedding.weight"][:n], qwen["model.embed_tokens.weight"])
    new_rows = ours["embedding.weight"][n:]
    assert new_rows.shape[0] == 512 and 0.01 < new_rows.std() < 0.03  # drawn like a fresh table (std 0.02)
    assert not torch.equal(ours["audio_head.layers.0.mlp.linear_fc2.weight"],
                           ours["text_head.layers.0.mlp.linear_fc2.weight"])


def test_export_writes_the_released_layout_and_import_round_trips_bit_exactly(imported, tmp_path):
    folder = export_kimi(imported, tmp_path / "kimi-audio")
    weights = load_file(str(folder / "model.safetensors"))
    cfg = imported.cfg
    h = cfg.hidden_size
    assert weights["model.layers.0.self_attn.k_proj.weight"].shape == (cfg.num_query_groups * cfg.head_dim, h)
    assert "model.layers.0.self_attn.o_proj.bias" not in weights
    assert weights["model.vq_adaptor.layers.0.weight"].shape == (h, cfg.adaptor_input_dim)
    assert weights["model.vq_adaptor.layers.4.weight"].shape == (h,)
    assert f"model.layers.{cfg.trunk_layers - 1}.mlp.up_proj.weight" in weights
    assert "model.mimo_layers.0.mlp.gate_proj.weight" in weights and "model.mimo_norm.weight" in weights
    assert weights["lm_head.weight"].shape == weights["mimo_output.weight"].shape == (cfg.vocab_size, h)
    config = json.loads((folder / "config.json").read_text())
    assert config["kimia_mimo_transformer_from_layer_index"] == cfg.shared_layers - 1
    assert config["kimia_mimo_layers"] == 1 and config["tie_word_embeddings"] is False

    again = import_kimi(folder)
    assert again.cfg == cfg
    before, after = tensors(imported), tensors(again)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_exported_whisper_subfolder_is_an_hf_whisper_folder(imported, tmp_path):
    folder = export_kimi(imported, tmp_path / "kimi-audio")
    encoder = WhisperModel.from_pretrained(folder / "whisper-large-v3").encoder.eval()
    for name, tensor in imported.whisper.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name


def test_dist_checkpoint_round_trip(imported, tmp_path):
    save_checkpoint(imported, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    before, after = tensors(imported), tensors(loaded)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    clip = noise_clip(1.0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.whisper([clip])[0], imported.whisper([clip])[0])
