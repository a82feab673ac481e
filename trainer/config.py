"""The typed configurations of pretraining (`jobs.pretrain`) and fine-tuning (`jobs.sft`).

`configs/pretrain/*.yaml` and `configs/sft/*.yaml` (with `key=value` overrides) are merged over these
dataclasses by jobs/cli.py: unknown keys and wrong types are errors before any work, and
trainer/checks.py then names every value that cannot train, before any rank builds the model. Defaults
are the report's recipe (§4.1.4, §4.2) where it gives one; the YAML files set the sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING

from trainer.data.tasks import TASKS
from trainer.optim import OptimSettings

PRETRAIN_TASK_WEIGHTS = {"audio_only": 1.0, "text_only": 7.0, "asr": 1.0, "tts": 1.0, "audio_semantic": 1.0,
                         "audio_text": 1.0, "audio_semantic_text": 2.0, "sft_asr": 0.0, "sft_understanding": 0.0,
                         "sft_speech2speech": 0.0}  # report Table 3
# fine-tuning: the ASR layout on curated shards, and prepared conversations (jobs.prepare_sft) of either kind
SFT_TASK_WEIGHTS = {task: 1.0 if task.startswith("sft_") else 0.0 for task in TASKS}


@dataclass(frozen=True)
class ModelSettings:
    """`preset` (model/config.py); `init_checkpoint`: a checkpoint folder (None: random init); `whisper`: the
    HF Whisper folder of the continuous features; `spec`: local, te or auto; `params_dtype`: float32 or
    bfloat16."""
    preset: str = "tiny"
    init_checkpoint: Optional[str] = None
    whisper: str = MISSING
    spec: str = "auto"
    params_dtype: str = "float32"


@dataclass(frozen=True)
class ParallelSettings:
    """Tensor and pipeline sizes (data parallel = world size / both); shared layers on the first and last
    pipeline stage (None: an even split)."""
    tensor: int = 1
    pipeline: int = 1
    first_stage_shared_layers: Optional[int] = None
    last_stage_shared_layers: Optional[int] = None


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a blend: a path or URL, its weight, a name for the counters (None: the URL's end)."""
    url: str = MISSING
    weight: float = 1.0
    name: Optional[str] = None


@dataclass(frozen=True)
class DataSettings:
    """The data path: `dataset` (path or URL) or a weighted blend `datasets`; rows of `seq_len` tokens,
    `micro_batch_rows` per rank; windows of up to `max_window_segments` segments; original or enhanced
    audio at `enhanced_fraction`; `num_workers` loader processes per rank; `shuffle_buffer` task samples
    mixed before packing."""
    dataset: Optional[str] = None
    datasets: List[DatasetEntry] = field(default_factory=list)
    record_samples: bool = False
    text_corpus: List[str] = field(default_factory=list)
    text_tokenizer: str = MISSING
    seq_len: int = 8192
    micro_batch_rows: int = 1
    max_window_segments: int = 32
    enhanced_fraction: float = 0.5
    strict: bool = False
    sft_instruction: str = ""
    instructions: Optional[str] = None
    instruction_pool: str = "asr"
    num_workers: int = 4
    prefetch_batches: int = 2
    shuffle_buffer: int = 256


@dataclass(frozen=True)
class TokenIds:
    """Special ids of the text vocabulary (the released tokenizer's by default, facts B1), and the blanks
    before the semantic tokens in audio->semantic+text (report §4.1.3)."""
    blank: int = 151666
    text_eos: int = 151667
    media_begin: int = 151661
    media_end: int = 151663
    user_start: int = 151670
    assistant_start: int = 151671
    speech_ct: int = 151675
    msg_end: int = 151645
    speech_ctd: int = 151676
    audio_delay: int = 6


@dataclass(frozen=True)
class TrainSettings:
    """The loop: `steps` optimizer steps of `global_batch_rows` rows; Whisper frozen for the first
    `whisper_frozen_fraction`; logs, checkpoints and evaluation every so many steps. `deterministic`:
    deterministic GPU kernels (slower), so a rerun or a resumed run gives the same losses to the bit, as
    CPU runs always do. `peak_tflops`: one GPU's dense bf16 peak, for the MFU in the log (0: looked up from
    the GPU's name in a bf16 run, model.flops; no MFU where none is known, as on CPU)."""
    steps: int = 100000
    global_batch_rows: int = 512
    loss_normalisation: str = "head_mean"
    whisper_frozen_fraction: float = 0.2
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_batches: int = 20
    eval_dataset: Optional[str] = None
    threads: int = 8
    deterministic: bool = False
    peak_tflops: float = 0.0


LOSS_NORMALISATIONS = ("head_mean", "token_mean")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything `jobs.pretrain` reads; `tasks` maps each of trainer.data.tasks.TASKS to its weight."""
    run_dir: str = MISSING
    seed: int = 1234
    model: ModelSettings = field(default_factory=ModelSettings)
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    tokens: TokenIds = field(default_factory=TokenIds)
    tasks: Dict[str, float] = field(default_factory=lambda: dict(PRETRAIN_TASK_WEIGHTS))
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)


@dataclass(frozen=True)
class SftConfig(PretrainConfig):
    """`jobs.sft`: the same run from a pretraining checkpoint, on the fine-tuning layout, with the report's
    fine-tuning schedule (§4.2: cosine 1e-5 -> 1e-6, 10% warmup, Whisper trainable throughout)."""
    tasks: Dict[str, float] = field(default_factory=lambda: dict(SFT_TASK_WEIGHTS))
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=1e-5, min_lr=1e-6, warmup_fraction=0.1))
    train: TrainSettings = field(default_factory=lambda: TrainSettings(steps=10000, whisper_frozen_fraction=0.0))
