"""The Kimi-Audio audio-text LLM on megatron-core (report §2.3, facts B4-B5, B7).

    audio ids --E--+ (+ adaptor(Whisper features), x sqrt(2), at continuous positions)
                   +--> shared TransformerBlock --+--> text head:  layers, norm, text_output  -> text logits
    text ids  --E--+                              +--> audio head: layers, norm, audio_output -> audio logits

Both streams share one (vocab-parallel) embedding table; both heads predict over the whole vocabulary.
Activations are megatron's [sequence, batch, hidden]; inputs and outputs are [batch, sequence]. Packed rows
(several samples per row, each seeing only its own past) take a block-diagonal causal mask under the local
spec; under Transformer Engine the rows go as one sequence [B x S, 1, hidden] with their samples' boundaries
(megatron's `thd`), which its flash and cuDNN attention run without building the S x S mask.

Pipeline parallelism splits the shared layers over the stages; the first stage also holds the embedding,
the adaptor and Whisper, the last stage both heads and the losses. A stage after the first takes its
input from `set_input_tensor` (megatron's schedules call it); a stage before the last returns its hidden
states [S, B, H] for the next.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from megatron.core.transformer.module import MegatronModule
from torch import Tensor, nn

from model.config import KimiAudioConfig
from model.losses import LossTargets, ModelOutput, masked_mean
from model.specs import block_spec, resolved_spec


class AudioAdaptor(nn.Module):
    """Stacked Whisper features (5120) -> hidden: Linear, SiLU, Dropout(0), Linear, LayerNorm (facts B2).

    A Sequential so its parameter names are the released `vq_adaptor.layers.{0,3,4}`.
    """

    def __init__(self, cfg: KimiAudioConfig):
        super().__init__()
        h = cfg.hidden_size
        self.layers = nn.Sequential(nn.Linear(cfg.adaptor_input_dim, h), nn.SiLU(), nn.Dropout(0.0),
                                    nn.Linear(h, h), nn.LayerNorm(h, eps=cfg.adaptor_norm_eps))
        for linear in (self.layers[0], self.layers[3]):
            nn.init.normal_(linear.weight, std=cfg.init_std)
            nn.init.zeros_(linear.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)


def causal_mask(seq_len: int, device) -> Tensor:
    """[1, 1, S, S] bool, True where a query must not see a key (the future)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)[None, None]


def sample_segments(document_ids: Tensor) -> Tensor:
    """[B, S] -> [B, S]: each position's segment, numbered through the batch in row-major order. A segment is
    a run of one sample's positions within a row; a row's padding (any negative id) is one run."""
    ids = document_ids.clamp(min=-1)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    return starts.flatten().cumsum(0).view_as(ids) - 1


def block_causal_mask(document_ids: Tensor) -> Tensor:
    """[B, 1, S, S] bool, True = masked: each position sees its own segment's past only (the local spec's
    attention for packed rows)."""
    segments = sample_segments(document_ids)
    other = segments[:, :, None] != segments[:, None, :]
    return (other | causal_mask(segments.shape[1], segments.device)[0])[:, None]


def packed_sequences(document_ids: Tensor):
    """Megatron's `thd` parameters for the batch flattened into one sequence of B x S positions: the segments'
    cumulative lengths, int32 as Transformer Engine's kernels take them (its attention for packed rows)."""
    from megatron.core.packed_seq_params import PackedSeqParams

    lengths = torch.bincount(sample_segments(document_ids).flatten())
    cumulative = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=document_ids.device)
    cumulative[1:] = lengths.cumsum(0)
    longest = int(lengths.max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cumulative, cu_seqlens_kv=cumulative,
                           max_seqlen_q=longest, max_seqlen_kv=longest)


def build_block(cfg: KimiAudioConfig, num_layers: int, final_norm: bool, pipelined: bool = False,
                pre_process: bool = True):
    from megatron.core.transformer.transformer_block import TransformerBlock

    config = cfg.transformer_config(num_layers, pipelined=pipelined)
    return TransformerBlock(config, block_spec(cfg, config), post_layer_norm=final_norm, pre_process=pre_process,
                            post_process=final_norm)


def pipeline_position(cfg: KimiAudioConfig) -> tuple[bool, bool]:
    """(first stage, last stage) of this rank; both without pipeline parallelism."""
    if cfg.pipeline_parallel == 1:
        return True, True
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() != cfg.pipeline_parallel:
        raise ValueError(f"the model config says pipeline_parallel={cfg.pipeline_parallel}, the process groups "
                         f"have {ps.get_pipeline_model_parallel_world_size()} stages")
    return ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()


class KimiAudioModel(MegatronModule):
    """Embedding, shared layers, two heads (this pipeline stage's part of them). `whisper` (a
    `WhisperFeatureEncoder`, first stage only) is optional: without it the caller passes precomputed
    stacked features. A MegatronModule, so `sharded_state_dict()` gives distributed checkpoints that load
    at other tensor- and pipeline-parallel sizes (layers keep their global numbers)."""

    def __init__(self, cfg: KimiAudioConfig, whisper: Optional[nn.Module] = None):
        from megatron.core import tensor_parallel
        from megatron.core.enums import ModelType
        from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
        from megatron.core.utils import init_method_normal, scaled_init_method_normal

        mcore = cfg.transformer_config(cfg.shared_layers, pipelined=True)
        super().__init__(config=mcore)
        self.cfg = cfg
        self.model_type = ModelType.encoder_or_decoder  # what megatron's schedules ask of a model
        self.pre_process, self.post_process = pipeline_position(cfg)
        # packed rows go to Transformer Engine's attention as one sequence of segments (thd: flash or cuDNN
        # attention, causal within each segment); the local spec takes a block-diagonal causal mask
        self.packs_into_one_sequence = resolved_spec(cfg.spec) == "te"
        self.embedding = self.adaptor = self.text_head = self.audio_head = None
        self.text_output = self.audio_output = None
        if self.pre_process:
            init = init_method_normal(cfg.init_std)
            self.embedding = tensor_parallel.VocabParallelEmbedding(cfg.vocab_size, cfg.hidden_size,
                                                                    init_method=init, config=mcore)
            self.adaptor = AudioAdaptor(cfg).to(cfg.torch_dtype)
        self.rotary = RotaryEmbedding(cfg.head_dim, rotary_percent=1.0, rotary_base=cfg.rope_theta,
                                      use_cpu_initialization=mcore.use_cpu_initialization)
        self.shared = build_block(cfg, cfg.shared_layers, final_norm=False, pipelined=True,
                                  pre_process=self.pre_process)
        if self.post_process:
            self.text_head = build_block(cfg, cfg.text_head_layers, final_norm=True)
            self.audio_head = build_block(cfg, cfg.audio_head_layers, final_norm=True)
            output_init = scaled_init_method_normal(cfg.init_std, cfg.trunk_layers)
            self.text_output = tensor_parallel.ColumnParallelLinear(
                cfg.hidden_size, cfg.vocab_size, config=mcore, init_method=output_init, bias=False)
            self.audio_output = tensor_parallel.ColumnParallelLinear(
                cfg.hidden_size, cfg.vocab_size, config=mcore, init_method=output_init, bias=False)
        if whisper is not None and not self.pre_process:
            raise ValueError("Whisper belongs on the first pipeline stage")
        self.whisper = whisper

    def exchanged_shape(self, rows: int, seq_len: int) -> tuple[int, int]:
        """(sequence, batch) of the hidden states one pipeline stage sends the next for packed rows
        (`document_ids` given), for megatron's schedule: [S, B, H], or [B x S, 1, H] under Transformer Engine."""
        return (rows * seq_len, 1) if self.packs_into_one_sequence else (seq_len, rows)

    def set_input_tensor(self, input_tensor) -> None:
        """The previous stage's hidden states (megatron's schedules pass a one-element list)."""
        if isinstance(input_tensor, (list, tuple)):
            if len(input_tensor) != 1:
                raise ValueError(f"one input tensor per stage, got {len(input_tensor)}")
            input_tensor = input_tensor[0]
        self.shared.set_input_tensor(input_tensor)

    def embed(self, audio_ids: Optional[Tensor], text_ids: Optional[Tensor], continuous_mask: Optional[Tensor],
              whisper_features: Optional[Tensor]) -> Tensor:
        """[B, S, H]: E(audio) (+ adaptor(features), x sqrt 2 where continuous) + E(text) (facts B4)."""
        if audio_ids is None and text_ids is None:
            raise ValueError("need audio ids, text ids or both")
        embedded = None
        if audio_ids is not None:
            embedded = self.embedding(audio_ids)
            if continuous_mask is not None and bool(continuous_mask.any()):
                if whisper_features is None or whisper_features.shape[0] != int(continuous_mask.sum()):
                    got = None if whisper_features is None else whisper_features.shape[0]
                    raise ValueError(f"{int(continuous_mask.sum())} continuous positions but {got} feature rows")
                adapted = self.adaptor(whisper_features.to(embedded.dtype))
                embedded = embedded.clone()
                embedded[continuous_mask] = (embedded[continuous_mask] + adapted) * math.sqrt(2.0)
        if text_ids is not None:
            text = self.embedding(text_ids)
            embedded = text if embedded is None else embedded + text
        return embedded

    def rotary_embedding(self, seq_len: int, position_ids: Optional[Tensor]) -> Tensor:
        """[S, B, 1, D] for megatron's [S, B] activations: positions 0..S-1, or the given ones ([B, S])."""
        if position_ids is None:
            return self.rotary(seq_len)
        table = self.rotary(int(position_ids.max()) + 1)[:, 0, 0, :]
        return table[position_ids].transpose(0, 1).unsqueeze(2)  # positions restart per sample

    def forward(self, audio_ids: Optional[Tensor] = None, text_ids: Optional[Tensor] = None, *,
                continuous_mask: Optional[Tensor] = None, whisper_features: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None, document_ids: Optional[Tensor] = None,
                targets: Optional[LossTargets] = None) -> ModelOutput | Tensor:
        """ids [B, S]; continuous_mask [B, S] bool with one feature row per True (row-major order);
        document_ids [B, S]: which sample each position belongs to, negative for padding (None: one sample per
        row), so that each sees only its own past. Stages after the first need the ids only for their shape;
        a stage before the last returns its hidden states: [S, B, H], or [B x S, 1, H] for packed rows under
        Transformer Engine (`packs_into_one_sequence`)."""
        from megatron.core import tensor_parallel

        rows, seq_len = (audio_ids if audio_ids is not None else text_ids).shape
        flat = document_ids is not None and self.packs_into_one_sequence
        hidden = None  # after the first stage, the previous stage's output arrives through set_input_tensor
        if self.pre_process:
            hidden = sequence_first(self.embed(audio_ids, text_ids, continuous_mask, whisper_features), flat)
        if flat:  # megatron's thd rotary takes one position per token when given as many as the tokens
            if position_ids is None:
                position_ids = torch.arange(seq_len, device=document_ids.device).expand(rows, seq_len)
            rotary = self.rotary_embedding(rows * seq_len, position_ids.reshape(1, -1))
            attention = dict(attention_mask=None, packed_seq_params=packed_sequences(document_ids))
        else:
            rotary = self.rotary_embedding(seq_len, position_ids)
            # built here: megatron's default causal mask is allocated on "cuda"
            mask = causal_mask(seq_len, rotary.device) if document_ids is None else block_causal_mask(document_ids)
            attention = dict(attention_mask=mask)
        shared = self.shared(hidden, rotary_pos_emb=rotary, **attention)
        if not self.post_process:
            return shared
        text_hidden = self.text_head(shared, rotary_pos_emb=rotary, **attention)
        audio_hidden = self.audio_head(shared, rotary_pos_emb=rotary, **attention)
        text_logits, _ = self.text_output(text_hidden)
        audio_logits, _ = self.audio_output(audio_hidden)
        if targets is None:
            gather = tensor_parallel.gather_from_tensor_model_parallel_region
            return ModelOutput(audio_logits=batch_first(gather(audio_logits), rows),
                               text_logits=batch_first(gather(text_logits), rows))
        audio_token_loss = batch_first(tensor_parallel.vocab_parallel_cross_entropy(
            audio_logits.float(), sequence_first(targets.audio_labels, flat)), rows)
        text_token_loss = batch_first(tensor_parallel.vocab_parallel_cross_entropy(
            text_logits.float(), sequence_first(targets.text_labels, flat)), rows)
        audio_loss = masked_mean(audio_token_loss, targets.audio_loss_mask)
        text_loss = masked_mean(text_token_loss, targets.text_loss_mask)
        return ModelOutput(audio_token_loss=audio_token_loss, text_token_loss=text_token_loss,
                           audio_loss=audio_loss, text_loss=text_loss, loss=audio_loss + text_loss)


def sequence_first(x: Tensor, flat: bool) -> Tensor:
    """[B, S, ...] -> megatron's [S, B, ...]; `flat`: the rows one after another, [B x S, 1, ...]."""
    if flat:
        x = x.reshape(1, -1, *x.shape[2:])
    return x.transpose(0, 1).contiguous()


def batch_first(x: Tensor, rows: int) -> Tensor:
    """[S, B, ...] or [B x S, 1, ...] -> [B, S, ...]."""
    return x.transpose(0, 1).reshape(rows, -1, *x.shape[2:])


def build_model(cfg: KimiAudioConfig, whisper: Optional[nn.Module] = None) -> KimiAudioModel:
    """The model for this rank's tensor-parallel slice (megatron's parallel state must be initialised)."""
    model = in_params_dtype(KimiAudioModel(cfg, whisper=whisper))
    if torch.cuda.is_available():
        model = model.cuda()
    return model


def in_params_dtype(model: KimiAudioModel) -> KimiAudioModel:
    """Every parameter in `cfg.params_dtype`, as megatron-LM's Float16Module does (the optimizer keeps float32
    masters). Without it a bfloat16 model has float32 norms (torch's RMSNorm, megatron's fallback without
    Transformer Engine, ignores params_dtype) and a float32 Whisper; megatron's distributed optimizer lists a
    group's half-precision masters before its float32 parameters while its index follows the gradient
    buffers, so a group mixing both reads another parameter's state when it saves a checkpoint."""
    dtype = model.cfg.torch_dtype
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return model
