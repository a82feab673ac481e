"""The ablation of the report's post-processing (§3.1): diarization and ASR rerun on the reference
recordings with each rule switched off in turn, and with the enhanced audio feeding the models instead of
the original, each variant scored beside the full pipeline.

The stages run in this process, on the curation config that made the dataset (or another), through the
same stage code as the Ray job; decoding and enhancement run once and are shared by every variant, and
the diarization and ASR models load once. Only
the label stages run: the quality filter and the tokenizer do not change speakers or words, so a variant's
labels are its diarization and ASR output, before filtering (the full pipeline's row here can therefore
differ from the dataset's own scores, which count filtered segments as missed).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Callable, Collection, Iterable, Optional, Sequence

from pipeline.config import CurateConfig
from pipeline.evaluation.hypotheses import work_hypotheses
from pipeline.evaluation.scoring import HypothesisSegment
from pipeline.stages.base import Stage, run_stage
from pipeline.stages.decode import decode_sessions
from pipeline.stages.diarize import DiarizeStage
from pipeline.stages.enhance import EnhanceStage
from pipeline.stages.transcribe import TranscribeStage
from pipeline.stages.work import RecordingWork


@dataclass(frozen=True)
class Variant:
    """A named change of the curation config: section -> settings replaced in it."""
    name: str
    changes: dict
    needs_enhancement: bool = False

    def apply(self, cfg: CurateConfig) -> CurateConfig:
        return replace(cfg, **{section: replace(getattr(cfg, section), **values)
                               for section, values in self.changes.items()})


FULL_PIPELINE = Variant("full pipeline", {})
VARIANTS = (
    FULL_PIPELINE,
    Variant("no cluster merging", {"diarize": {"cluster_merging": False}}),
    Variant("no chunk reassignment", {"diarize": {"chunk_reassignment": False}}),
    Variant("no segment merging", {"diarize": {"segment_merging": False}}),
    Variant("enhanced audio to diarization and ASR",
            {"diarize": {"audio": "enhanced"}, "transcribe": {"audio": "enhanced"}}, needs_enhancement=True),
)


def _ready(stage: Stage) -> Stage:
    stage.setup()
    return stage


def label_stages(cfg: CurateConfig) -> dict[str, Stage]:
    """Diarization and ASR with their models loaded, by config section."""
    stages: dict[str, Stage] = {"diarize": _ready(DiarizeStage(cfg.diarize, cfg.sample_rate))}
    if cfg.transcribe.enabled:
        stages["transcribe"] = _ready(TranscribeStage(cfg.transcribe))
    return stages


def with_settings(stage: Stage, settings) -> Stage:
    """The loaded stage with a variant's settings: a variant changes what the stages do with their models'
    output (rules, which audio they hear), never which models they load, so the models load once."""
    variant = copy.copy(stage)
    variant.cfg = settings
    return variant


def decoded_and_enhanced(cfg: CurateConfig, sources: Sequence[str]) -> list[RecordingWork]:
    works = [work for source in sources
             for work in decode_sessions(source, cfg.decode, cfg.sample_rate, storage_options=cfg.storage_options)]
    if cfg.enhance.enabled:
        works = run_stage(_ready(EnhanceStage(cfg.enhance, cfg.sample_rate)), works)
    return works


def run_variants(cfg: CurateConfig, sources: Sequence[str], names: Collection[str] = (),
                 variants: Iterable[Variant] = VARIANTS, say: Callable[[str], None] = print
                 ) -> dict[str, Optional[dict[str, list[HypothesisSegment]]]]:
    """Variant name -> recording name (as in `names`, the references') -> labelled segments; None for a
    variant this config cannot run."""
    started = time.perf_counter()
    works = decoded_and_enhanced(cfg, sources)
    for work in works:
        if work.failure is not None:
            say(f"ablation: {work.source} failed in {work.failure.stage}: {work.failure.message}")
    say(f"ablation: {len(sources)} recordings decoded{' and enhanced' if cfg.enhance.enabled else ''} "
        f"in {time.perf_counter() - started:.1f} s")
    stages = label_stages(cfg)
    results: dict[str, Optional[dict[str, list[HypothesisSegment]]]] = {}
    for variant in variants:
        if variant.needs_enhancement and not cfg.enhance.enabled:
            say(f"ablation: {variant.name}: skipped, enhancement is off in this config")
            results[variant.name] = None
            continue
        started = time.perf_counter()
        labelled, settings = works, variant.apply(cfg)
        for section, stage in stages.items():
            labelled = run_stage(with_settings(stage, getattr(settings, section)), labelled)
        results[variant.name] = work_hypotheses(labelled, names)
        say(f"ablation: {variant.name}: {time.perf_counter() - started:.1f} s")
    return results
