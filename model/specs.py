"""Which megatron-core modules fill the transformer layer's slots: local modules or Transformer Engine's."""
from __future__ import annotations

from model.config import KimiAudioConfig


def transformer_engine_problem() -> str | None:
    """Why Transformer Engine's layers cannot run here, if they cannot. They run on CUDA only, and need its
    torch extension: `import transformer_engine` alone succeeds (with a warning) where only the core library
    is installed, and on a machine without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return "Transformer Engine runs on CUDA only, and this machine has no CUDA device"
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception as e:  # noqa: BLE001 (any failure to load means the local spec)
        return (f"Transformer Engine's torch extension does not load ({type(e).__name__}: {e}); "
                f"install it as `make gpu-check` does")
    return None


def layer_spec(cfg: KimiAudioConfig):
    """A Qwen2 layer as a megatron ModuleSpec: pre-RMSNorm, GQA with QKV bias and RoPE, SwiGLU MLP."""
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec, get_gpt_layer_with_transformer_engine_spec,
    )

    spec = cfg.spec
    if spec not in ("local", "te", "auto"):
        raise ValueError(f"model spec {spec!r}: choose local, te or auto")
    problem = None if spec == "local" else transformer_engine_problem()
    if spec == "auto":
        spec = "local" if problem else "te"
    if spec == "te":
        if problem:
            raise ValueError(f"model spec 'te': {problem}; or use 'local'")
        return get_gpt_layer_with_transformer_engine_spec(normalization="RMSNorm")
    return get_gpt_layer_local_spec(normalization="RMSNorm")
