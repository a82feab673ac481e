"""Checkpoint conversion between HF layouts and the model's state dict (names of a TP=1 model).

- HF Qwen2/Qwen2.5 (`Qwen2ForCausalLM`) -> shared layers + text head; the vocabulary grows by the audio
  range (new rows drawn like the rest of the table), the audio head stays random (report §2.3).
- The released Kimi-Audio HF layout (facts B2) <-> the model, both ways, bit-exact.
megatron fuses Q, K and V into `linear_qkv` grouped per KV head ([q of the group, k, v] for each group)
and gate and up into `linear_fc1` ([gate; up]); that regrouping is all there is to it.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from model.config import KimiAudioConfig

Tensor = torch.Tensor


def _fuse_qkv(q: Tensor, k: Tensor, v: Tensor, cfg: KimiAudioConfig) -> Tensor:
    groups, d = cfg.num_query_groups, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    q = q.reshape(groups, per_group * d, *q.shape[1:])
    k, v = k.reshape(groups, d, *k.shape[1:]), v.reshape(groups, d, *v.shape[1:])
    return torch.cat([q, k, v], dim=1).reshape(-1, *q.shape[2:])


def _split_qkv(qkv: Tensor, cfg: KimiAudioConfig) -> tuple[Tensor, Tensor, Tensor]:
    groups, d = cfg.num_query_groups, cfg.head_dim
    per_group = cfg.num_attention_heads // groups
    grouped = qkv.reshape(groups, (per_group + 2) * d, *qkv.shape[1:])
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    return (q.reshape(-1, *qkv.shape[1:]), k.reshape(-1, *qkv.shape[1:]), v.reshape(-1, *qkv.shape[1:]))


def layer_to_mcore(hf: dict[str, Tensor], src: str, dst: str, cfg: KimiAudioConfig) -> dict[str, Tensor]:
    """One Qwen2 decoder layer (`src` prefix, HF names) as megatron local-spec tensors under `dst`."""
    out = {f"{dst}input_layernorm.weight": hf[f"{src}input_layernorm.weight"],
           f"{dst}pre_mlp_layernorm.weight": hf[f"{src}post_attention_layernorm.weight"],
           f"{dst}self_attention.linear_proj.weight": hf[f"{src}self_attn.o_proj.weight"],
           f"{dst}mlp.linear_fc1.weight": torch.cat([hf[f"{src}mlp.gate_proj.weight"],
                                                     hf[f"{src}mlp.up_proj.weight"]]),
           f"{dst}mlp.linear_fc2.weight": hf[f"{src}mlp.down_proj.weight"]}
    for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
        out[f"{dst}self_attention.linear_qkv.{kind}"] = _fuse_qkv(
            *(hf[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"), cfg)
    return out


def layer_to_hf(ours: dict[str, Tensor], src: str, dst: str, cfg: KimiAudioConfig) -> dict[str, Tensor]:
    """The inverse of `layer_to_mcore`."""
    gate, up = ours[f"{src}mlp.linear_fc1.weight"].chunk(2)
    out = {f"{dst}input_layernorm.weight": ours[f"{src}input_layernorm.weight"],
           f"{dst}post_attention_layernorm.weight": ours[f"{src}pre_mlp_layernorm.weight"],
           f"{dst}self_attn.o_proj.weight": ours[f"{src}self_attention.linear_proj.weight"],
           f"{dst}mlp.gate_proj.weight": gate, f"{dst}mlp.up_proj.weight": up,
           f"{dst}mlp.down_proj.weight": ours[f"{src}mlp.linear_fc2.weight"]}
    for kind in ("weight", "bias") if cfg.qkv_bias else ("weight",):
        for name, t in zip("qkv", _split_qkv(ours[f"{src}self_attention.linear_qkv.{kind}"], cfg)):
            out[f"{dst}self_attn.{name}_proj.{kind}"] = t
    return out


def _layer_places(cfg: KimiAudioConfig) -> Iterator[tuple[str, str]]:
    """(released HF prefix, our prefix) of every transformer layer."""
    for i in range(cfg.trunk_layers):
        ours = f"shared.layers.{i}." if i < cfg.shared_layers else f"text_head.layers.{i - cfg.shared_layers}."
        yield f"model.layers.{i}.", ours
    for j in range(cfg.audio_head_layers):
        yield f"model.mimo_layers.{j}.", f"audio_head.layers.{j}."


# Whole-tensor renames between the released Kimi-Audio layout and ours.
KIMI_NAMES = {
    "model.embed_tokens.weight": "embedding.weight",
    "model.norm.weight": "text_head.final_layernorm.weight",
    "model.mimo_norm.weight": "audio_head.final_layernorm.weight",
    "lm_head.weight": "text_output.weight",
    "mimo_output.weight": "audio_output.weight",
    **{f"model.vq_adaptor.layers.{i}.{k}": f"adaptor.layers.{i}.{k}" for i in (0, 3, 4) for k in ("weight", "bias")},
}


def kimi_to_mcore(hf: dict[str, Tensor], cfg: KimiAudioConfig) -> dict[str, Tensor]:
    out = {ours: hf[name] for name, ours in KIMI_NAMES.items()}
    for src, dst in _layer_places(cfg):
        out.update(layer_to_mcore(hf, src, dst, cfg))
    return out


def mcore_to_kimi(ours: dict[str, Tensor], cfg: KimiAudioConfig) -> dict[str, Tensor]:
    out = {name: ours[mine] for name, mine in KIMI_NAMES.items()}
    for dst, src in _layer_places(cfg):
        out.update(layer_to_hf(ours, src, dst, cfg))
    return out


def qwen2_to_mcore(hf: dict[str, Tensor], cfg: KimiAudioConfig, new_rows: Callable[[int, int], Tensor],
                   fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """Qwen2 weights into the shared layers and text head; `fresh` (a new model's state) fills the rest.

    The embedding and lm_head grow from the Qwen2 vocabulary to `cfg.vocab_size` with `new_rows(n, hidden)`.
    """
    out = dict(fresh)
    for i in range(cfg.trunk_layers):
        ours = f"shared.layers.{i}." if i < cfg.shared_layers else f"text_head.layers.{i - cfg.shared_layers}."
        out.update(layer_to_mcore(hf, f"model.layers.{i}.", ours, cfg))
    out["text_head.final_layernorm.weight"] = hf["model.norm.weight"]
    lm_head = hf.get("lm_head.weight", hf["model.embed_tokens.weight"])  # tied in small Qwen2 models
    for name, table in (("embedding.weight", hf["model.embed_tokens.weight"]), ("text_output.weight", lm_head)):
        missing = cfg.vocab_size - table.shape[0]
        if missing < 0:
            raise ValueError(f"Qwen2 vocabulary {table.shape[0]} is larger than the model's {cfg.vocab_size}")
        out[name] = torch.cat([table, new_rows(missing, cfg.hidden_size).to(table.dtype)])
    return out
