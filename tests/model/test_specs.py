"""Which megatron-core modules fill the layers: Transformer Engine's where it is installed (the GPU check's
install step puts it in; CI has none, so this runs only there)."""
import pytest

from model.specs import te_layer_spec


def transformer_engine_loads() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # noqa: BLE001 (not installed, or its core alone: FileNotFoundError)
        return False
    return True


@pytest.mark.skipif(not transformer_engine_loads(), reason="Transformer Engine's torch extension is not installed")
def test_the_transformer_engine_layer_builds_with_causal_attention_for_packed_sequences():
    # packed rows reach TE's attention as one sequence with their samples' boundaries (thd), which megatron
    # turns from `causal` into `padding_causal`; under `causal` a mask passed would be ignored
    from megatron.core.extensions.transformer_engine import TEDotProductAttention, TELayerNormColumnParallelLinear
    from megatron.core.transformer.enums import AttnMaskType

    attention = te_layer_spec().submodules.self_attention
    assert attention.params["attn_mask_type"] == AttnMaskType.causal
    assert attention.submodules.core_attention is TEDotProductAttention
    assert attention.submodules.linear_qkv is TELayerNormColumnParallelLinear
