"""Transformer Engine's attention for packed rows, stood in for on CPU, where TE's kernels cannot run: the model's
thd path (rows flattened into one sequence, megatron's thd rotary, the samples' cu_seqlens, outputs folded
back) runs through megatron's real attention layers, and only the core attention kernel is replaced."""
import torch
import torch.nn.functional as F


class SegmentAttention(torch.nn.Module):
    """megatron's thd inputs ([T, heads, dim] and the segments' cumulative lengths), each segment causal on its
    own through torch's scaled_dot_product_attention."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        assert attention_mask is None and packed_seq_params.qkv_format == "thd"
        bounds = packed_seq_params.cu_seqlens_q.tolist()
        groups = query.shape[1] // key.shape[1]

        def heads_first(x, start, end, repeat=1):
            return x[start:end].transpose(0, 1).repeat_interleave(repeat, 0)

        out = [F.scaled_dot_product_attention(heads_first(query, start, end), heads_first(key, start, end, groups),
                                              heads_first(value, start, end, groups), is_causal=True).transpose(0, 1)
               for start, end in zip(bounds[:-1], bounds[1:])]
        return torch.cat(out).flatten(1)


def attend_as_transformer_engine(model, setattr=setattr) -> None:
    """This stage's layers take packed rows as one sequence, through SegmentAttention (`setattr`: pytest's
    monkeypatch.setattr, to undo it after a test)."""
    for block in (model.shared, model.text_head, model.audio_head):
        for layer in block.layers if block is not None else ():
            setattr(layer.self_attention, "core_attention", SegmentAttention())
    setattr(model, "packs_into_one_sequence", True)
