"""Fine-tuning data from conversations in the released JSONL format -> shards, on an embedded Ray or a cluster.

    python -m jobs.prepare_sft --config configs/sft/prepare.yaml input=DATA.jsonl output=DATASET [key=value ...]
    ray job submit --address http://HOST:8265 --working-dir . -- python -m jobs.prepare_sft \
        --config configs/sft/prepare.yaml input=s3://bucket/sft/train.jsonl output=s3://bucket/datasets/sft

Each line is one conversation (pipeline/sft/conversations.py); its audio messages go through the curation
job's decode stage and the tokenizer stage on Ray, and it becomes one sample (pipeline/shards/schema.py,
ConversationRecord) that `audiomill-shards` and the trainer read. A conversation without an instruction
of its own gets one from the pools (`instructions`). Exactly once, like curation: lines already committed
or failed are skipped, a refused line or unreadable audio is recorded in `failed/` with its line number
and reason, and `retry_failed=true` tries the failed ones again. Exit 2: a config or input problem before
any work.
"""
from __future__ import annotations

import dataclasses
import pickle
import sys
from functools import partial

from jobs.cli import ConfigError, parse_job_args
from jobs.curate import follow
from jobs.curate_checks import embedded_capacity_problems, storage_problems
from pipeline import __version__
from pipeline.ledger import done_recordings
from pipeline.ray_runner import StagePlan, stream_works
from pipeline.sft.conversations import parse_jsonl
from pipeline.sft.instructions import load_pools
from pipeline.sft.prepare import PrepareSftConfig, expand_conversation, pack_conversation
from pipeline.shards import DatasetError, DatasetLayout, PipelineInfo
from pipeline.shards.storage import StorageError, storage_for
from pipeline.shards.writer import write_dataset_info
from pipeline.stages.tokenize import TokenizeStage
from pipeline.stages.write import WriteSettings
from pipeline.summary import CurationSummary

NOT_PROVENANCE = ("input", "output", "retry_failed", "ray", "resources", "storage_options")


def error(message: str) -> None:
    for line in str(message).splitlines():
        print(f"prepare_sft: error: {line}", file=sys.stderr)


def read_lines(cfg: PrepareSftConfig) -> str:
    store = storage_for(cfg.input, cfg.storage_options)
    if not store.is_file(store.root):
        raise ConfigError(f"input={cfg.input}: no such JSONL file")
    try:
        return store.read_bytes(store.root).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"input={cfg.input}: not UTF-8 text ({e})") from None


def main(cfg: PrepareSftConfig) -> int:
    try:
        pools = load_pools(cfg.instructions, cfg.spoken_instruction_fraction)
        problems = cfg.problems() + pools.problems() + storage_problems(cfg)
        if not problems:
            problems += embedded_capacity_problems(cfg)
        if problems:
            raise ConfigError("\n".join(problems))
        layout = DatasetLayout.of(cfg.output, cfg.storage_options)
        layout.check_writable()
        plans = parse_jsonl(read_lines(cfg), cfg.input, cfg.audio_root, pools, cfg.seed)
    except (ConfigError, DatasetError, StorageError, OSError) as e:
        error(e)
        return 2
    config = dataclasses.asdict(cfg)
    pipeline = PipelineInfo.for_config(__version__, {k: v for k, v in config.items() if k not in NOT_PROVENANCE})
    models = {"tokenize": cfg.tokenize.model, "kind": "conversations"}
    layout.create()
    if not layout.is_ours():
        write_dataset_info(layout, config, models)
    layout.remove_orphans()
    done = done_recordings(layout, retry_failed=cfg.retry_failed)
    todo = [p for p in plans if p.recording_id not in done]
    summary = CurationSummary(inputs=len(plans), skipped_done=len(plans) - len(todo), job="prepare_sft")
    refused = sum(1 for p in todo if p.error)
    print(f"prepare_sft: {len(plans)} conversations in {cfg.input}, {summary.skipped_done} already done, "
          f"{len(todo)} to prepare" + (f" ({refused} refused as they stand: recorded in failed/)" if refused else ""))

    write = WriteSettings(output=cfg.output, target_bytes=cfg.shards.target_bytes,
                          target_samples=cfg.shards.target_samples, sample_rate=cfg.sample_rate,
                          storage_options=cfg.storage_options)
    tokenize = StagePlan("tokenize", partial(TokenizeStage, cfg.tokenize, cfg.sample_rate), cfg.resources.tokenize)
    items = [{"plan": pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)} for p in todo]
    outcomes = stream_works(cfg, items, partial(expand_conversation, cfg=cfg), [tokenize],
                            partial(pack_conversation, pipeline=pipeline), write)
    return follow(outcomes, summary, lambda totals: write_dataset_info(layout, config, models, totals), error)

if __name__ == "__main__":
    sys.exit(main(parse_job_args(__doc__.splitlines()[0], PrepareSftConfig, name="prepare_sft")))
