"""The curation job's typed configuration, composed from the settings each stage module owns.

`configs/curate/*.yaml` and `key=value` overrides are merged over `CurateConfig` (jobs/cli.py), so an
unknown key or a value of the wrong type is an error before any work; `problems()` then lists every
setting that cannot run, one line each. The job, the Ray actors and the stages receive these frozen
dataclasses (picklable), never dictionaries.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List

from omegaconf import MISSING

from pipeline.capacity import PoolResources, TaskResources, WriteResources
from pipeline.model_folders import runs_on_gpu
from pipeline.ray_runner import RaySettings
from pipeline.stages.decode import DECODE_RESOURCES, DecodeSettings
from pipeline.stages.diarize import DIARIZE_RESOURCES, DiarizeSettings
from pipeline.stages.enhance import ENHANCE_RESOURCES, EnhanceSettings
from pipeline.stages.pack import PACK_RESOURCES
from pipeline.stages.quality import QUALITY_RESOURCES, QualitySettings
from pipeline.stages.tokenize import TOKENIZE_RESOURCES, TokenizeSettings
from pipeline.stages.transcribe import TRANSCRIBE_RESOURCES, TranscribeSettings
from pipeline.stages.write import WRITE_RESOURCES, ShardTargets

# Whisper, Silero VAD, the GE2E embedder and the semantic tokenizer all take 16 kHz, and the shards store
# what the stages saw: the working rate is pinned (validation refuses any other) rather than resampled per
# stage. Inputs at any rate are resampled to it on decode.
WORKING_SAMPLE_RATE = 16000

INPUT_EXTENSIONS = ["wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm", "mp4", "mkv", "wma", "aiff"]


@dataclass(frozen=True)
class CurateResources:
    """Per stage, what Ray gives it: decode, pack and write run as tasks, the model stages as actor pools."""
    decode: TaskResources = field(default_factory=lambda: DECODE_RESOURCES)
    pack: TaskResources = field(default_factory=lambda: PACK_RESOURCES)
    write: WriteResources = field(default_factory=lambda: WRITE_RESOURCES)
    enhance: PoolResources = field(default_factory=lambda: ENHANCE_RESOURCES)
    diarize: PoolResources = field(default_factory=lambda: DIARIZE_RESOURCES)
    transcribe: PoolResources = field(default_factory=lambda: TRANSCRIBE_RESOURCES)
    quality: PoolResources = field(default_factory=lambda: QUALITY_RESOURCES)
    tokenize: PoolResources = field(default_factory=lambda: TOKENIZE_RESOURCES)


@dataclass(frozen=True)
class CurateConfig:
    """Everything `python -m jobs.curate` reads (configs/curate/default.yaml documents each value)."""
    input: str = MISSING
    output: str = MISSING
    storage_options: Dict[str, Any] = field(default_factory=dict)
    sample_rate: int = WORKING_SAMPLE_RATE
    retry_failed: bool = False
    input_extensions: List[str] = field(default_factory=lambda: list(INPUT_EXTENSIONS))
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    diarize: DiarizeSettings = field(default_factory=DiarizeSettings)
    transcribe: TranscribeSettings = field(default_factory=TranscribeSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    tokenize: TokenizeSettings = field(default_factory=TokenizeSettings)
    shards: ShardTargets = field(default_factory=ShardTargets)
    ray: RaySettings = field(default_factory=RaySettings)
    resources: CurateResources = field(default_factory=CurateResources)

    def pools(self) -> dict[str, PoolResources]:
        """The actor pools this config starts: the model stages that are on. Fixed windows have no model:
        they run in the decode tasks, unless enhancement (a pool) comes before them."""
        on = {"enhance": self.enhance.enabled,
              "diarize": self.diarize.backend != "fixed" or self.enhance.enabled,
              "transcribe": self.transcribe.enabled, "quality": self.quality.enabled,
              "tokenize": self.tokenize.enabled}
        return {stage: getattr(self.resources, stage) for stage, enabled in on.items() if enabled}

    def stage_devices(self) -> dict[str, str]:
        """The device each enabled model stage runs its model on."""
        devices = {"enhance": self.enhance.device} if self.enhance.enabled else {}
        if self.diarize.device is not None:
            devices["diarize"] = self.diarize.device
        if self.transcribe.enabled:
            devices["transcribe"] = self.transcribe.device
        if self.tokenize.enabled:
            devices["tokenize"] = self.tokenize.device
        if self.quality.enabled and self.quality.dnsmos:
            devices["quality"] = self.quality.device
        return devices

    def problems(self) -> list[str]:
        """Every setting that cannot run, one line each (the machine's and the storage's are the job's)."""
        return self.stage_problems() + self.resource_problems()

    def stage_problems(self) -> list[str]:
        """The stages' settings, without the resources Ray would give them (enough to run them in-process)."""
        problems = []
        if self.sample_rate != WORKING_SAMPLE_RATE:
            problems.append(f"sample_rate={self.sample_rate!r}: the model stages work at {WORKING_SAMPLE_RATE} Hz "
                            f"(Whisper, VAD, speaker embeddings, semantic tokens); inputs at any rate are "
                            f"resampled to it on decode")
        for section in (self.decode, self.enhance, self.diarize, self.transcribe, self.quality, self.tokenize,
                        self.shards, self.ray):
            problems += section.problems()
        enhanced_readers = [f"{name}.audio" for name, section in (("diarize", self.diarize),
                                                                  ("transcribe", self.transcribe))
                            if section.audio == "enhanced" and (name == "diarize" or section.enabled)]
        if enhanced_readers and not self.enhance.enabled:
            problems.append(f"{' and '.join(enhanced_readers)}=enhanced but enhance.enabled=false: there is no "
                            f"enhanced audio to read")
        return problems

    def resource_problems(self) -> list[str]:
        """Pool and task resources, and each model stage's device against the GPUs its actors get."""
        problems = []
        for stage in dataclasses.fields(self.resources):
            problems += getattr(self.resources, stage.name).problems(f"resources.{stage.name}")
        pools = self.pools()
        return problems + device_problems(self.stage_devices(), pools)


def device_problems(devices: dict[str, str], pools: dict[str, PoolResources]) -> list[str]:
    """Each model stage's device against the GPUs its actors get (any job's stages and pools)."""
    problems = []
    for stage, device in devices.items():
        gpus = pools[stage].num_gpus
        if runs_on_gpu(device) and not gpus:
            problems.append(f"{stage}: device {device} but resources.{stage}.num_gpus=0, so its actors see no "
                            f"GPU (give the stage GPUs, or device cpu)")
        elif not runs_on_gpu(device) and gpus:
            problems.append(f"{stage}: resources.{stage}.num_gpus={gpus:g} but the model runs on {device}: the "
                            f"GPUs would sit idle (set num_gpus 0, or device cuda)")
    return problems


# Settings that do not change what is written: where it is read and written, how it is scheduled.
NOT_PROVENANCE = ("input", "output", "input_extensions", "retry_failed", "ray", "resources", "storage_options")


def provenance_settings(cfg: CurateConfig) -> dict:
    """The part of the config a sample's `config_hash` covers: stages' models and thresholds, the sample
    rate, shard targets; the same curation written elsewhere or on other pools hashes the same."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_PROVENANCE}
