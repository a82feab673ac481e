"""The model's typed config and presets (facts B1): one dataclass, turned into megatron's TransformerConfig.

    cfg = kimi_audio_7b()                     # the released 7B shapes
    cfg = model_preset("tiny", tensor_parallel=2)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch

# Token ids of the released tokenizer (facts B1); the audio range starts at KIMIA_TOKEN_OFFSET.
KIMIA_TOKEN_OFFSET = 152064
TEXT_BLANK_ID = 151666
TEXT_EOS_ID = 151667
MEDIA_BEGIN_ID = 151661
MEDIA_END_ID = 151663
PAD_ID = 152063


@dataclass(frozen=True)
class KimiAudioConfig:
    """Shapes of the audio-text LLM. `shared_layers + text_head_layers` is the Qwen2 trunk's depth."""
    hidden_size: int
    shared_layers: int              # trunk layers both heads branch from (22 in the release: 0..21)
    text_head_layers: int           # remaining trunk layers, then norm and lm_head (6)
    audio_head_layers: int          # the audio head's own layers ("mimo"), then norm and output (6)
    num_attention_heads: int
    num_query_groups: int           # KV heads
    ffn_hidden_size: int
    vocab_size: int                 # text + audio ids, both heads predict over all of it
    audio_token_offset: int = KIMIA_TOKEN_OFFSET  # audio id = offset + semantic tokenizer id
    rope_theta: float = 1e6
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    adaptor_input_dim: int = 5120   # 4 stacked Whisper-large-v3 frames
    adaptor_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    init_std: float = 0.02
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    # Shared layers on the first / last pipeline stage (None: an even split). Both heads sit on the last
    # stage, so a balanced 7B at PP=2 puts fewer shared layers there (e.g. last_stage_shared_layers=5).
    first_stage_shared_layers: Optional[int] = None
    last_stage_shared_layers: Optional[int] = None
    params_dtype: str = "float32"   # float32 on CPU, bfloat16 on GPU
    spec: str = "auto"              # "local" (megatron-core modules), "te" (Transformer Engine), "auto"
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    deterministic: bool = False     # megatron's deterministic kernels (train.deterministic)

    @property
    def trunk_layers(self) -> int:
        return self.shared_layers + self.text_head_layers

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.params_dtype]

    def with_changes(self, **changes) -> "KimiAudioConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "KimiAudioConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config field(s): {unknown}")
        return cls(**data)

    def shared_layers_per_stage(self) -> list[int]:
        """Shared layers on each pipeline stage, or a clear error when the layout does not add up."""
        pp, first, last = self.pipeline_parallel, self.first_stage_shared_layers, self.last_stage_shared_layers
        if pp == 1:
            return [self.shared_layers]
        fixed = {stage: n for stage, n in ((0, first), (pp - 1, last)) if n is not None}
        middle_stages = pp - len(fixed)
        rest = self.shared_layers - sum(fixed.values())
        per_stage = rest // middle_stages if middle_stages else 0
        layout = [fixed.get(stage, per_stage) for stage in range(pp)]
        if sum(layout) != self.shared_layers or min(layout) < 1:  # megatron wants >= 1 layer per stage
            raise ValueError(
                f"{self.shared_layers} shared layers do not split over {pp} pipeline stages with "
                f"first_stage_shared_layers={first}, last_stage_shared_layers={last}: every stage needs at "
                "least one, and the stages without a fixed count share the rest evenly")
        return layout

    def transformer_config(self, num_layers: int, pipelined: bool = False):
        """megatron's TransformerConfig for one block of `num_layers` layers of this model. `pipelined`: the
        shared block, split over the pipeline stages; the heads live whole on the last stage."""
        from megatron.core.transformer import TransformerConfig

        layout = {}
        if pipelined and self.pipeline_parallel > 1:
            self.shared_layers_per_stage()  # the clear error before megatron's assertion
            layout = dict(pipeline_model_parallel_size=self.pipeline_parallel,
                          num_layers_in_first_pipeline_stage=self.first_stage_shared_layers,
                          num_layers_in_last_pipeline_stage=self.last_stage_shared_layers)
        return TransformerConfig(
            num_layers=num_layers, hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
            num_query_groups=self.num_query_groups, ffn_hidden_size=self.ffn_hidden_size, kv_channels=self.head_dim,
            normalization="RMSNorm", layernorm_epsilon=self.norm_eps, add_bias_linear=False,
            add_qkv_bias=self.qkv_bias, gated_linear_unit=True, activation_func=torch.nn.functional.silu,
            hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
            tensor_model_parallel_size=self.tensor_parallel, pipeline_dtype=self.torch_dtype, **layout,
            params_dtype=self.torch_dtype, bf16=self.params_dtype == "bfloat16",
            fp16=self.params_dtype == "float16", init_method_std=self.init_std,
            use_cpu_initialization=not torch.cuda.is_available(),
            bias_activation_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
            bias_dropout_fusion=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
            deterministic_mode=self.deterministic)


def kimi_audio_7b(**changes) -> KimiAudioConfig:
    """The released Kimi-Audio-7B shapes (Qwen2.5-7B trunk, 6-layer audio head)."""
    return KimiAudioConfig(hidden_size=3584, shared_layers=22, text_head_layers=6, audio_head_layers=6,
                           num_attention_heads=28, num_query_groups=4, ffn_hidden_size=18944,
                           vocab_size=168448, **changes)


def kimi_audio_1b(**changes) -> KimiAudioConfig:
    """A ~1B model of the same make (Qwen2.5-1.5B-like trunk), for single-GPU throughput checks."""
    return KimiAudioConfig(hidden_size=1536, shared_layers=22, text_head_layers=6, audio_head_layers=4,
                           num_attention_heads=12, num_query_groups=2, ffn_hidden_size=8960,
                           vocab_size=168448, **changes)


def kimi_audio_small(**changes) -> KimiAudioConfig:
    """Small enough for CPU benchmarks (~20M parameters), big enough that matmuls dominate."""
    return KimiAudioConfig(hidden_size=256, shared_layers=4, text_head_layers=2, audio_head_layers=2,
                           num_attention_heads=8, num_query_groups=2, ffn_hidden_size=768, vocab_size=8192,
                           audio_token_offset=4096, adaptor_input_dim=256, **changes)


def kimi_audio_tiny(**changes) -> KimiAudioConfig:
    """Seconds on CPU: tests and the demo. The audio range holds the tiny tokenizer's 512 ids."""
    return KimiAudioConfig(hidden_size=64, shared_layers=2, text_head_layers=1, audio_head_layers=1,
                           num_attention_heads=4, num_query_groups=2, ffn_hidden_size=128, vocab_size=1024,
                           audio_token_offset=512, adaptor_input_dim=256, max_position_embeddings=2048,
                           **changes)


PRESETS = {"kimi_audio_7b": kimi_audio_7b, "kimi_audio_1b": kimi_audio_1b, "small": kimi_audio_small,
           "tiny": kimi_audio_tiny}


def model_preset(name: str, **changes) -> KimiAudioConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](**changes)


def parameter_count(cfg: KimiAudioConfig) -> int:
    """Parameters of the model (without Whisper) from its shapes alone: nothing is allocated."""
    h, kv = cfg.hidden_size, cfg.num_query_groups * cfg.head_dim
    attention = h * h + 2 * h * kv + h * h + (h + 2 * kv if cfg.qkv_bias else 0)
    layer = attention + 3 * h * cfg.ffn_hidden_size + 2 * h
    layers = cfg.trunk_layers + cfg.audio_head_layers
    return cfg.vocab_size * h * 3 + layers * layer + 2 * h + adaptor_parameter_count(cfg)


def adaptor_parameter_count(cfg: KimiAudioConfig) -> int:
    """The audio adaptor's parameters: two linears and a norm over the stacked Whisper features."""
    h = cfg.hidden_size
    return cfg.adaptor_input_dim * h + h + h * h + h + 2 * h
