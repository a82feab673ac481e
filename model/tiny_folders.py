"""Tiny random model folders in the released on-disk layouts, for tests, benchmarks and the demo.

Offline there is no hub: these builders write folders that the real loading code reads exactly as it
reads the released ones (same config fields, same key names, same files), only small and random.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model.semantic_tokenizer import WhisperVQEncoder, whisper_vq_config

# The released GLM-4-Voice tokenizer config (facts A1), shrunk where size matters.
TINY_TOKENIZER_CONFIG = {
    "architectures": ["WhisperVQEncoder"], "model_type": "whisper", "torch_dtype": "float32",
    "d_model": 64, "encoder_layers": 4, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
    "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 128,
    "num_mel_bins": 128, "max_source_positions": 1500, "activation_function": "gelu", "scale_embedding": False,
    "pooling_kernel_size": 4, "pooling_type": "avg", "pooling_position": 2,
    "quantize_position": 2, "quantize_vocab_size": 512, "quantize_encoder_only": True,
    "quantize_causal_encoder": False, "quantize_causal_block_size": 200,
    "encoder_causal_convolution": True, "encoder_causal_attention": False,
    "quantize_ema_decay": 0.99, "quantize_restart_interval": 100,
    "quantize_commit_coefficient": 0.25, "quantize_loss_scale": 10.0,
    "skip_language_detection": True, "vocab_size": 51866,
}

# whisper-large-v3's layout (128 mels, 1500 positions) at toy width and depth.
TINY_WHISPER_CONFIG = {
    "d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
    "decoder_layers": 1, "decoder_attention_heads": 4, "decoder_ffn_dim": 128, "num_mel_bins": 128,
    "max_source_positions": 1500, "max_target_positions": 448, "vocab_size": 51866,
}


def write_tiny_semantic_tokenizer(folder: str | Path, seed: int = 0, prefixed: bool = False) -> Path:
    """A random WhisperVQEncoder folder: `config.json` + `model.safetensors` with the released keys.

    `prefixed=True` writes the other released form: a full checkpoint under `model.encoder.` with all
    `encoder_layers` layers and the final layer norm, of which the tokenizer uses the first few.
    """
    from safetensors.torch import save_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer, sinusoids

    torch.manual_seed(seed)
    raw = dict(TINY_TOKENIZER_CONFIG)
    config = whisper_vq_config(raw)
    encoder = WhisperVQEncoder(config)
    d = config.d_model
    with torch.no_grad():
        encoder.embed_positions.weight.copy_(sinusoids(config.max_source_positions, d))
        # codebook entries near the scale of the pooled hidden states, so random audio spreads over many ids
        encoder.codebook.weight.normal_(0.0, 0.5)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    state["ema_count"] = torch.ones(config.quantize_vocab_size)
    state["ema_weight"] = encoder.codebook.weight.detach().clone()
    state["embed_positions2.weight"] = torch.randn(config.max_source_positions // 4, d)
    if prefixed:
        for index in range(config.quantize_position, config.encoder_layers):
            extra = WhisperEncoderLayer(config).state_dict()
            state.update({f"layers.{index}.{k}": v for k, v in extra.items()})
        state["layer_norm.weight"], state["layer_norm.bias"] = torch.ones(d), torch.zeros(d)
        state = {f"model.encoder.{k}": v for k, v in state.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    return folder


def write_tiny_whisper(folder: str | Path, seed: int = 0, conditional_generation: bool = False) -> Path:
    """A random HF Whisper folder as `save_pretrained` writes it (`encoder.*` keys, or `model.encoder.*`
    for a `WhisperForConditionalGeneration` folder)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperModel

    torch.manual_seed(seed)
    cls = WhisperForConditionalGeneration if conditional_generation else WhisperModel
    cls(WhisperConfig(**TINY_WHISPER_CONFIG)).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# A Qwen2/Qwen2.5 decoder at toy size (untied lm_head as in Qwen2.5-7B, RoPE theta 1e6).
TINY_QWEN2_CONFIG = {
    "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048, "rope_theta": 1e6,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "use_sliding_window": False, "hidden_act": "silu",
}


def write_tiny_qwen2(folder: str | Path, seed: int = 0) -> Path:
    """A random HF Qwen2 folder as `Qwen2ForCausalLM.save_pretrained` writes it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    Qwen2ForCausalLM(Qwen2Config(**TINY_QWEN2_CONFIG)).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_tiny_text_tokenizer(folder: str | Path, texts: list[str], vocab_size: int = 500) -> Path:
    """A byte-level BPE tokenizer trained offline on `texts` with the `tokenizers` library, saved as an
    HF tokenizer folder (tokenizer.json + tokenizer_config.json). Ids stay below `vocab_size`, so the ids
    above it (up to the model's text range) are free for the layout's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(str(folder))
    return Path(folder)
