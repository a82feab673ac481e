"""Model checkpoints: megatron distributed checkpoints (any tensor-parallel size in, any out) plus the
model config, and import/export of HF folders (Qwen2 in; the released Kimi-Audio layout in and out).

    CKPT/model_config.json        KimiAudioConfig (parallel sizes are the loader's, not the saver's)
    CKPT/whisper_config.json      the Whisper encoder's HF config, when the model carries one
    CKPT/weights/                 megatron dist_checkpointing (torch_dist)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from model.config import KimiAudioConfig, KIMIA_TOKEN_OFFSET
from model.convert import kimi_to_mcore, mcore_to_kimi, qwen2_to_mcore
from model.hf_folder import ModelFolderError, read_config, read_state_dict
from model.kimi_audio import KimiAudioModel, build_model, pipeline_position
from model.parallel import barrier, is_rank0

WEIGHTS = "weights"
WHISPER_SUBFOLDER = "whisper-large-v3"


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def save_checkpoint(model: KimiAudioModel, folder: str | Path) -> Path:
    """Every rank calls this; each writes its own shards of `model.sharded_state_dict()`."""
    from megatron.core import dist_checkpointing

    folder = Path(folder)
    if is_rank0():
        (folder / WEIGHTS).mkdir(parents=True, exist_ok=True)
        _atomic_json(folder / "model_config.json", model.cfg.to_dict())
        if model.whisper is not None:
            _atomic_json(folder / "whisper_config.json", model.whisper.encoder.config.to_dict())
    barrier()
    dist_checkpointing.save(model.sharded_state_dict(), str(folder / WEIGHTS))
    return folder


def read_checkpoint_config(folder: str | Path) -> KimiAudioConfig:
    path = Path(folder) / "model_config.json"
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no model_config.json (not a model checkpoint)")
    return KimiAudioConfig.from_dict(json.loads(path.read_text()))


def whisper_from_config(raw: dict, trainable: bool = False):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from model.whisper_features import WhisperFeatureEncoder

    config = WhisperConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    return WhisperFeatureEncoder(WhisperEncoder(config), trainable=trainable)


def load_checkpoint(folder: str | Path, tensor_parallel: int = 1, pipeline_parallel: int = 1,
                    **changes) -> KimiAudioModel:
    """Build the model at this process's parallel layout and load a checkpoint saved at any layout."""
    from megatron.core import dist_checkpointing

    folder = Path(folder)
    layout = dict(first_stage_shared_layers=None, last_stage_shared_layers=None)  # the saver's, not ours
    cfg = read_checkpoint_config(folder).with_changes(
        tensor_parallel=tensor_parallel, pipeline_parallel=pipeline_parallel, **{**layout, **changes})
    whisper_config = folder / "whisper_config.json"
    whisper = None
    if whisper_config.is_file() and pipeline_position(cfg)[0]:  # Whisper lives on the first stage
        whisper = whisper_from_config(json.loads(whisper_config.read_text()))
    model = build_model(cfg, whisper=whisper)
    model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(folder / WEIGHTS)))
    return model


def _load_converted(model: KimiAudioModel, converted: dict[str, torch.Tensor], source: str) -> None:
    state = model.state_dict()
    unknown = sorted(set(converted) - set(state))
    if unknown:
        raise ModelFolderError(f"{source}: converted tensors the model does not have: {unknown[:5]}")
    for name, tensor in converted.items():
        if not isinstance(tensor, torch.Tensor):  # megatron's `_extra_state` entries
            continue
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ModelFolderError(f"{source}: {name} has shape {tuple(tensor.shape)}, "
                                   f"the model expects {tuple(state[name].shape)}")
    state.update({k: v.to(state[k].dtype) if isinstance(v, torch.Tensor) else v for k, v in converted.items()})
    model.load_state_dict(state)


def _whisper_state(model: KimiAudioModel) -> dict[str, torch.Tensor]:
    return {} if model.whisper is None else {
        f"whisper.encoder.{k}": v for k, v in model.whisper.encoder.state_dict().items()}


# ---- Qwen2 in -------------------------------------------------------------------------------------------

def config_from_qwen2(raw: dict, *, text_head_layers: int, audio_head_layers: int, audio_vocab_size: int,
                      adaptor_input_dim: int = 5120, **changes) -> KimiAudioConfig:
    """The model around a Qwen2 trunk: the last `text_head_layers` become the text head."""
    layers = raw["num_hidden_layers"]
    if not 0 < text_head_layers < layers:
        raise ValueError(f"text_head_layers must be between 1 and {layers - 1}")
    return KimiAudioConfig(
        hidden_size=raw["hidden_size"], shared_layers=layers - text_head_layers, text_head_layers=text_head_layers,
        audio_head_layers=audio_head_layers, num_attention_heads=raw["num_attention_heads"],
        num_query_groups=raw.get("num_key_value_heads", raw["num_attention_heads"]),
        ffn_hidden_size=raw["intermediate_size"], vocab_size=raw["vocab_size"] + audio_vocab_size,
        audio_token_offset=raw["vocab_size"], rope_theta=float(raw.get("rope_theta", 10000.0)),
        norm_eps=raw.get("rms_norm_eps", 1e-6), adaptor_input_dim=adaptor_input_dim,
        max_position_embeddings=raw.get("max_position_embeddings", 32768),
        init_std=raw.get("initializer_range", 0.02), **changes)


def import_qwen2(qwen2_folder: str | Path, *, text_head_layers: int, audio_head_layers: int, audio_vocab_size: int,
                 whisper_folder: Optional[str | Path] = None, seed: int = 0, **changes) -> KimiAudioModel:
    """A TP=1 model: Qwen2 trunk and lm_head, grown vocabulary, random audio head and adaptor."""
    from model.whisper_features import WhisperFeatureEncoder

    raw = read_config(qwen2_folder)
    whisper = WhisperFeatureEncoder.from_folder(whisper_folder) if whisper_folder else None
    cfg = config_from_qwen2(raw, text_head_layers=text_head_layers, audio_head_layers=audio_head_layers,
                            audio_vocab_size=audio_vocab_size,
                            adaptor_input_dim=whisper.output_dim if whisper else 5120, **changes)
    model = build_model(cfg, whisper=whisper)
    generator = torch.Generator().manual_seed(seed)
    new_rows = lambda n, h: torch.randn(n, h, generator=generator) * cfg.init_std  # noqa: E731
    fresh = {k: v for k, v in model.state_dict().items() if not k.startswith("whisper.")}
    _load_converted(model, qwen2_to_mcore(read_state_dict(qwen2_folder), cfg, new_rows, fresh), str(qwen2_folder))
    return model


# ---- the released Kimi-Audio layout, both ways ----------------------------------------------------------

def kimi_hf_config(cfg: KimiAudioConfig) -> dict:
    """config.json of the released layout (facts B1) for this model's shapes."""
    return {
        "architectures": ["MoonshotKimiaForCausalLM"], "model_type": "kimi_audio", "torch_dtype": cfg.params_dtype,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.trunk_layers, "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_query_groups, "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "hidden_act": "silu", "tie_word_embeddings": False,
        "initializer_range": cfg.init_std,
        "kimia_mimo_layers": cfg.audio_head_layers, "kimia_mimo_transformer_from_layer_index": cfg.shared_layers - 1,
        "kimia_token_offset": cfg.audio_token_offset, "kimia_text_output_vocab": cfg.audio_token_offset,
        "kimia_audio_output_vocab": cfg.vocab_size - cfg.audio_token_offset + (
            512 if cfg.audio_token_offset == KIMIA_TOKEN_OFFSET else 0),
        "use_whisper_feature": True, "kimia_adaptor_input_dim": cfg.adaptor_input_dim,
        "kimia_mimo_audiodelaytokens": 6,
    }


def config_from_kimi_hf(raw: dict, **changes) -> KimiAudioConfig:
    shared = raw["kimia_mimo_transformer_from_layer_index"] + 1
    return KimiAudioConfig(
        hidden_size=raw["hidden_size"], shared_layers=shared, text_head_layers=raw["num_hidden_layers"] - shared,
        audio_head_layers=raw["kimia_mimo_layers"], num_attention_heads=raw["num_attention_heads"],
        num_query_groups=raw["num_key_value_heads"], ffn_hidden_size=raw["intermediate_size"],
        vocab_size=raw["vocab_size"], audio_token_offset=raw.get("kimia_token_offset", KIMIA_TOKEN_OFFSET),
        rope_theta=float(raw.get("rope_theta", 1e6)), norm_eps=raw.get("rms_norm_eps", 1e-6),
        adaptor_input_dim=raw.get("kimia_adaptor_input_dim", 5120),
        max_position_embeddings=raw.get("max_position_embeddings", 8192),
        init_std=raw.get("initializer_range", 0.02), **changes)


def export_kimi(model: KimiAudioModel, folder: str | Path) -> Path:
    """Write the released layout: config.json + model.safetensors, Whisper in `whisper-large-v3/`."""
    from safetensors.torch import save_file

    if model.cfg.tensor_parallel != 1:
        raise ValueError("export from a TP=1 model (load the checkpoint with tensor_parallel=1)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    save_file(mcore_to_kimi(state, model.cfg), str(folder / "model.safetensors"), metadata={"format": "pt"})
    _atomic_json(folder / "config.json", kimi_hf_config(model.cfg))
    if model.whisper is not None:
        whisper_dir = folder / WHISPER_SUBFOLDER
        whisper_dir.mkdir(exist_ok=True)
        encoder = model.whisper.encoder
        save_file({f"encoder.{k}": v.detach().contiguous() for k, v in encoder.state_dict().items()},
                  str(whisper_dir / "model.safetensors"), metadata={"format": "pt"})
        _atomic_json(whisper_dir / "config.json", {**encoder.config.to_dict(), "architectures": ["WhisperModel"]})
    return folder


def import_kimi(folder: str | Path, **changes) -> KimiAudioModel:
    """A TP=1 model from the released layout (and its `whisper-large-v3/` subfolder when present)."""
    from model.whisper_features import WhisperFeatureEncoder

    folder = Path(folder)
    cfg = config_from_kimi_hf(read_config(folder), **changes)
    whisper_dir = folder / WHISPER_SUBFOLDER
    whisper = WhisperFeatureEncoder.from_folder(whisper_dir) if whisper_dir.is_dir() else None
    model = build_model(cfg, whisper=whisper)
    _load_converted(model, kimi_to_mcore(read_state_dict(folder), cfg), str(folder))
    return model
