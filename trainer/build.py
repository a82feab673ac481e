"""Building a run's parts from its config: parallel state, model, data loaders."""
from __future__ import annotations

from pathlib import Path

import torch

from model.config import model_preset
from trainer.config import DataSettings, DatasetEntry, PretrainConfig
from trainer.data.loader import BatchLoader
from trainer.data.stream import BlendStream, DatasetSpec
from trainer.data.workers import WorkerBatchLoader
from trainer.data.tasks import SpecialIds


def parallel_ranks() -> tuple[int, int, bool]:
    """(data-parallel rank, data-parallel size, whether this rank writes its loader state): the tensor- and
    pipeline-parallel peers of a data-parallel rank read the same data, so one of them keeps its state."""
    from megatron.core import parallel_state as ps

    keeps_loader_state = ps.get_tensor_model_parallel_rank() == 0 and ps.get_pipeline_model_parallel_rank() == 0
    return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(), keeps_loader_state


def build_run_model(cfg: PretrainConfig):
    """The preset (or the init checkpoint's config) at this run's parallel layout, Whisper attached."""
    from model.checkpoint import load_checkpoint
    from model.kimi_audio import build_model, in_params_dtype  # megatron-core: once the job quieted its notices
    from model.whisper_features import WhisperFeatureEncoder

    p = cfg.parallel
    changes = dict(tensor_parallel=p.tensor, pipeline_parallel=p.pipeline, spec=cfg.model.spec,
                   first_stage_shared_layers=p.first_stage_shared_layers,
                   last_stage_shared_layers=p.last_stage_shared_layers, params_dtype=cfg.model.params_dtype,
                   deterministic=cfg.train.deterministic)
    if cfg.model.init_checkpoint:
        model = load_checkpoint(cfg.model.init_checkpoint, **changes)
    else:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and at every TP size
        model = build_model(model_preset(cfg.model.preset, **changes))
    if model.whisper is None and cfg.model.whisper and model.pre_process:  # Whisper feeds the first stage
        model.whisper = WhisperFeatureEncoder.from_folder(cfg.model.whisper, trainable=True)
        if torch.cuda.is_available():
            model.whisper.cuda()
    if model.whisper is not None:
        model.whisper.set_trainable(True)  # frozen phases go through the optimizer's groups (trainer.optim)
        if model.whisper.output_dim != model.cfg.adaptor_input_dim:
            raise ValueError(f"Whisper gives {model.whisper.output_dim}-dim stacked features, the model's adaptor "
                             f"takes {model.cfg.adaptor_input_dim}")
    return in_params_dtype(model)


def use_deterministic_kernels() -> None:
    """Before CUDA starts: cuBLAS with a fixed workspace (its reductions then run in one order), Transformer
    Engine's deterministic attention (megatron-core refuses to build TE's attention in deterministic mode
    without it) and torch's deterministic implementations (a warning where an op has none); the model's own
    choice (megatron's embedding without F.embedding's atomic backward) follows `train.deterministic`
    through its config."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    os.environ["NVTE_ALLOW_NONDETERMINISTIC_ALGO"] = "0"
    torch.use_deterministic_algorithms(True, warn_only=True)


def special_ids(cfg: PretrainConfig, model_cfg) -> SpecialIds:
    t = cfg.tokens
    return SpecialIds(blank=t.blank, text_eos=t.text_eos, media_begin=t.media_begin, media_end=t.media_end,
                      audio_offset=model_cfg.audio_token_offset,
                      audio_vocab_size=model_cfg.vocab_size - model_cfg.audio_token_offset,
                      audio_delay=t.audio_delay, user_start=t.user_start, assistant_start=t.assistant_start,
                      speech_ct=t.speech_ct, msg_end=t.msg_end, speech_ctd=t.speech_ctd)


def text_encoder(folder: str):
    from transformers import AutoTokenizer

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"text tokenizer folder {folder} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return lambda text: tokenizer.encode(text, add_special_tokens=False)


def dataset_specs(data: DataSettings) -> list[DatasetSpec]:
    """The run's datasets: `data.datasets` (url, weight, optional name), or `data.dataset` as a one-entry blend.
    Names default to the URL's last part, numbered when two are alike."""
    entries = list(data.datasets) or ([DatasetEntry(url=data.dataset)] if data.dataset else [])
    specs, names = [], set()
    for i, entry in enumerate(entries):
        url = str(entry.url)
        name = str(entry.name or url.rstrip("/").rsplit("/", 1)[-1] or f"dataset{i}")
        if name in names:
            name = f"{name}-{i}"
        names.add(name)
        specs.append(DatasetSpec(url=url, weight=float(entry.weight), name=name))
    return specs


def instruction_pool(cfg: PretrainConfig) -> list[str]:
    """sft_asr's instructions, drawn per sample: the pool `data.instruction_pool` of `data.instructions`
    (written ones; spoken instructions need tokens, which jobs.prepare_sft makes), else none."""
    from pipeline.sft.instructions import load_pools

    pools = load_pools(cfg.data.instructions, 0.0)
    return [item.text for item in pools.pools.get(cfg.data.instruction_pool) or []]


def build_loader(cfg: PretrainConfig, datasets: list[DatasetSpec], ids: SpecialIds, encode, dp_rank: int,
                 dp_size: int, seed: int, listings: list[dict] | None = None) -> BatchLoader | WorkerBatchLoader:
    """In-process with `data.num_workers: 0`; otherwise worker processes, each its own share of shards.
    `listings`: each dataset's {"shards", "owners"}, read once by the caller instead of by every reader."""
    d = cfg.data

    def make_loader(worker: int, num_workers: int) -> BatchLoader:
        stream = BlendStream(datasets, rank=dp_rank * num_workers + worker, world=dp_size * num_workers,
                             seed=seed, text_corpus=list(d.text_corpus), listings=listings, seq_len=d.seq_len,
                             weights=dict(cfg.tasks), max_window_segments=d.max_window_segments,
                             enhanced_fraction=d.enhanced_fraction, ids=ids, encode_text=encode, strict=d.strict,
                             instruction=d.sft_instruction, instructions=instruction_pool(cfg))
        return BatchLoader(stream, d.seq_len, d.micro_batch_rows, pad_id=ids.blank, shuffle_buffer=d.shuffle_buffer)

    if d.num_workers == 0:
        return make_loader(0, 1)
    return WorkerBatchLoader(make_loader, d.num_workers, prefetch=d.prefetch_batches)
