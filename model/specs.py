"""Which megatron-core modules fill the transformer layer's slots: local modules or Transformer Engine's."""
from __future__ import annotations

from model.config import KimiAudioConfig

SPECS = ("local", "te", "auto")  # `model.spec`: megatron-core's own modules, Transformer Engine's, or TE where it runs


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


def cpu_training_problem() -> str | None:
    """Why training cannot run on this machine's CPU, if it cannot: megatron-core 0.16 takes Transformer
    Engine's Adam and multi-tensor gradient kernels at import whenever TE is installed, whatever the model's
    spec, and they are CUDA-only (seen in an environment with TE and no GPU: the first step's gradient norm
    failed with "CUDA driver version is insufficient")."""
    import importlib.util

    import torch

    if torch.cuda.is_available() or importlib.util.find_spec("transformer_engine") is None:
        return None
    return ("Transformer Engine is installed and this machine has no CUDA device: megatron-core would train with "
            "its CUDA-only Adam and gradient kernels; train on a GPU, or in an environment without it")


def resolved_spec(spec: str) -> str:
    """`local` or `te`: what `auto` means here, and `te` refused where Transformer Engine cannot run."""
    if spec not in SPECS:
        raise ValueError(f"model spec {spec!r}: choose {', '.join(SPECS)}")
    problem = None if spec == "local" else transformer_engine_problem()
    if spec == "auto":
        return "local" if problem else "te"
    if spec == "te" and problem:
        raise ValueError(f"model spec 'te': {problem}; or use 'local'")
    return spec


def te_layer_spec():
    """Transformer Engine's layer: its fused norm-and-linear modules take RMSNorm from the model's config
    (megatron-core's TE spec has no `normalization` argument, unlike the local one). Its attention is causal:
    packed rows reach it as one sequence with their samples' boundaries (thd), which megatron then marks
    `padding_causal`, causal within each sample (a mask passed with `causal` would be ignored)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec()


def block_spec(cfg: KimiAudioConfig, config):
    """One block's layers (this pipeline stage's) as Qwen2 layers, pre-RMSNorm, GQA with QKV bias and RoPE,
    SwiGLU MLP, and its final norm, all of one spec. Given the layer spec alone, megatron-core's
    TransformerBlock takes Transformer Engine's norm whenever TE imports, so a local-spec model on a machine
    with TE installed ran TE's RMSNorm, and failed on CPU."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    if resolved_spec(cfg.spec) == "te":
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider

        layer, norm = te_layer_spec(), TESpecProvider()
    else:
        from megatron.core.models.backends import LocalSpecProvider

        layer, norm = get_gpt_layer_local_spec(normalization="RMSNorm"), LocalSpecProvider()
    return TransformerBlockSubmodules(layer_specs=[layer] * get_num_layers_to_build(config),
                                      layer_norm=norm.layer_norm(rms_norm=True))
