"""Which megatron-core modules fill the transformer layer's slots: local modules or Transformer Engine's."""
from __future__ import annotations

from model.config import KimiAudioConfig


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return True


def layer_spec(cfg: KimiAudioConfig):
    """A Qwen2 layer as a megatron ModuleSpec: pre-RMSNorm, GQA with QKV bias and RoPE, SwiGLU MLP."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec, get_gpt_layer_with_transformer_engine_spec,
    )

    spec = cfg.spec
    if spec == "auto":
        spec = "te" if transformer_engine_available() else "local"
    if spec == "te":
        if not transformer_engine_available():
            raise ValueError("model spec 'te' needs Transformer Engine, which is not installed; use 'local'")
        return get_gpt_layer_with_transformer_engine_spec(normalization="RMSNorm")
    if spec != "local":
        raise ValueError(f"model spec {spec!r}: choose local, te or auto")
    return get_gpt_layer_local_spec(normalization="RMSNorm")
