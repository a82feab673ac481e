"""Curation job: raw recordings -> curated WebDataset shards, on an embedded Ray or a cluster.

    python -m jobs.curate --config configs/curate/demo.yaml input=DIR output=DATASET [key=value ...]
    ray job submit --address http://HOST:8265 --working-dir . -- python -m jobs.curate --config ... \
        input=s3://bucket/raw/ output=s3://bucket/datasets/name

INPUT and OUTPUT are local paths or storage URLs (pipeline/shards/storage.py); shards are committed by
writer tasks in the workers (pipeline/stages/write.py), the driver only tallies outcomes.

Exactly once: recordings already committed, rejected or failed in OUTPUT are skipped, so a rerun after a
crash adds exactly what is missing and a rerun after success adds nothing; `retry_failed=true` processes
the failed ones again. OUTPUT must be new, empty or a dataset of ours. Exit 2: a config or input error
(before any work) or a stage that cannot start; 3: a cluster that cannot hold the pools.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from functools import partial
from typing import Callable, Iterator, Optional

from jobs.cli import ConfigError, parse_job_args
from jobs.curate_checks import validate
from pipeline import __version__
from pipeline.capacity import task_threads
from pipeline.config import CurateConfig, provenance_settings
from pipeline.inputs import InputError, list_inputs
from pipeline.ledger import done_recordings
from pipeline.ray_runner import SchedulingError, StagePlan, curate_stream
from pipeline.shards import DatasetError, DatasetLayout, PipelineInfo
from pipeline.shards.writer import write_dataset_info
from pipeline.shards.schema import recording_id_for
from pipeline.shards.storage import StorageError
from pipeline.stages.diarize import DiarizeStage
from pipeline.stages.enhance import EnhanceStage
from pipeline.stages.quality import QualityStage
from pipeline.stages.tokenize import TokenizeStage
from pipeline.stages.transcribe import TranscribeStage
from pipeline.stages.write import RecordingOutcome, WriteSettings
from pipeline.summary import CurationSummary


PROGRESS_EVERY_SECONDS = 10.0


def stage_plans(cfg: CurateConfig) -> list[StagePlan]:
    """The stages in order; each is built inside its Ray actor (or, without a pool, its task) from its own settings."""
    r, sample_rate = cfg.resources, cfg.sample_rate
    plans = [StagePlan("enhance", partial(EnhanceStage, cfg.enhance, sample_rate), r.enhance)
             ] if cfg.enhance.enabled else []
    plans.append(StagePlan("diarize", partial(DiarizeStage, cfg.diarize, sample_rate), r.diarize,
                           in_task="diarize" not in cfg.pools()))
    if cfg.transcribe.enabled:
        plans.append(StagePlan("transcribe", partial(TranscribeStage, cfg.transcribe), r.transcribe))
    if cfg.quality.enabled:
        threads = task_threads(r.quality.num_cpus)  # DNSMOS's onnxruntime threads: the CPUs the actor holds
        plans.append(StagePlan("quality", partial(QualityStage, cfg.quality, cfg.diarize.vad, sample_rate, threads),
                               r.quality))
    if cfg.tokenize.enabled:
        plans.append(StagePlan("tokenize", partial(TokenizeStage, cfg.tokenize, sample_rate), r.tokenize))
    return plans


def work_to_do(sources: list[str], done: set[str]) -> list[tuple[str, list[str]]]:
    """(source, session ids already done) for each source not finished whole.

    A source split into sessions is done session by session and its session count is known only after
    decoding, so it is decoded again and only its missing sessions go on (decode is cheap next to ASR).
    """
    sessions_done: dict[str, list[str]] = {}
    for recording_id in done:
        if "-s" in recording_id:
            sessions_done.setdefault(recording_id.split("-s")[0], []).append(recording_id)
    todo = []
    for source in sources:
        whole = recording_id_for(source)
        if whole not in done:
            todo.append((source, sessions_done.get(whole, [])))
    return todo


def error(message: str) -> None:
    for line in str(message).splitlines():
        print(f"curate: error: {line}", file=sys.stderr)


def main(cfg: CurateConfig) -> int:
    try:
        validate(cfg)
        storage_options = cfg.storage_options
        layout = DatasetLayout.of(cfg.output, storage_options)
        layout.check_writable()  # never write into (or clean up) a folder that is not ours
        sources = list_inputs(cfg.input, cfg.input_extensions, storage_options)
    except (ConfigError, InputError, DatasetError, StorageError) as e:
        error(e)
        return 2
    config = dataclasses.asdict(cfg)  # dataset.json keeps all of it; the hash covers what changes the data
    pipeline = PipelineInfo.for_config(__version__, provenance_settings(cfg))
    models = {"transcribe": cfg.transcribe.model, "diarize": cfg.diarize.backend,
              "enhance": cfg.enhance.model if cfg.enhance.enabled else None,
              "tokenize": cfg.tokenize.model if cfg.tokenize.enabled else None}
    layout.create()
    if not layout.is_ours():  # the mark first: a run killed before its first shard leaves a dataset of ours
        write_dataset_info(layout, config, models)
    layout.remove_orphans()  # once, before any writer of this job runs; only our temp files and tars
    todo = work_to_do(sources, done_recordings(layout, retry_failed=cfg.retry_failed))
    summary = CurationSummary(inputs=len(sources), skipped_done=len(sources) - len(todo))
    resplit = sum(1 for _, sessions in todo if sessions)
    retried = " (failed ones retried)" if cfg.retry_failed else ""
    print(f"curate: {len(sources)} inputs, {summary.skipped_done} already done{retried}, {len(todo)} to process"
          + (f" ({resplit} split into sessions, some done: decoded again to find the rest)" if resplit else ""))

    write = WriteSettings(output=cfg.output, target_bytes=cfg.shards.target_bytes,
                          target_samples=cfg.shards.target_samples, sample_rate=cfg.sample_rate,
                          storage_options=storage_options)
    return follow(curate_stream(cfg, todo, stage_plans(cfg), pipeline, write), summary,
                  lambda totals: write_dataset_info(layout, config, models, totals), error)


def follow(outcomes: Iterator[Optional[RecordingOutcome]], summary: CurationSummary, record: Callable[[dict], None],
           error: Callable[[str], None]) -> int:
    """Tally a job's outcomes, a progress line every PROGRESS_EVERY_SECONDS (also while none arrives: a None
    says the stream is still waiting), and `record` the summary in dataset.json at the end (totals over every
    committed manifest) or when the job stops. The exit status: 0; 3 when the cluster cannot hold the pools;
    2 when a stage's actors cannot start."""
    started = shown = time.perf_counter()
    try:
        for outcome in outcomes:
            if outcome is not None:
                summary.add(outcome)
            if time.perf_counter() - shown >= PROGRESS_EVERY_SECONDS:
                shown = time.perf_counter()
                print(summary.progress_line(shown - started), flush=True)
    except SchedulingError as e:
        record(summary.to_dict())
        error(e)
        return 3
    except Exception as e:  # an actor that cannot start fails every input alike: one line, not Ray's traceback
        setup = stage_setup_error(e)
        if setup is None:
            raise
        record(summary.to_dict())
        error(setup)
        return 2
    summary.wall_seconds = time.perf_counter() - started
    record(summary.to_dict())
    print(summary.format())
    return 0


def stage_setup_error(e: BaseException) -> str | None:
    """The StageSetupError line inside Ray's wrapping of an actor's failed constructor, if that is what `e` is."""
    import traceback

    text = "".join(traceback.format_exception(e))
    marker = "StageSetupError: "
    if marker not in text:
        return None
    return text[text.rindex(marker) + len(marker):].splitlines()[0]


if __name__ == "__main__":
    sys.exit(main(parse_job_args(__doc__.splitlines()[0], CurateConfig, name="curate")))
