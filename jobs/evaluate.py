"""Label quality against references: a curated dataset's speakers and words scored against RTTM and
transcripts of the same recordings (DER, JER, missed speech, false alarm; WER, CER).

    python -m jobs.evaluate --config configs/evaluate/default.yaml refs=DIR dataset=DATASET [key=value ...]
        [--json] [--ablate]

Prints a table (per recording, then overall) and writes OUT/report.json and OUT/evaluation.png; `--json`
prints the report as JSON instead of the table. `--ablate` reruns diarization and ASR on the reference
recordings with each of the report's post-processing rules switched off and with enhanced audio feeding
the models, and scores every variant beside the full pipeline (pipeline/evaluation/ablation.py): the
audio is found in DIR by name (NAME.wav, ...) or at the dataset's recorded source. Exit 2: a config,
reference or dataset problem, before any work.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

from jobs.cli import ConfigError, load_settings, parse_job_args, settings_from_values
from pipeline.config import INPUT_EXTENSIONS, CurateConfig
from pipeline.evaluation.ablation import run_variants
from pipeline.evaluation.config import EvaluateConfig
from pipeline.evaluation.hypotheses import dataset_hypotheses, dataset_sources
from pipeline.evaluation.references import Reference, ReferenceError, load_references, recording_name
from pipeline.evaluation.report import format_table, plot_report, report_document
from pipeline.evaluation.scoring import RecordingScore, score_recordings
from pipeline.shards import DatasetError, DatasetLayout
from pipeline.shards.layout import atomic_write_bytes
from pipeline.shards.storage import StorageError, storage_for


def error(message: str) -> None:
    for line in str(message).splitlines():
        print(f"evaluate: error: {line}", file=sys.stderr)


def ablation_config(cfg: EvaluateConfig, layout: DatasetLayout) -> CurateConfig:
    """The curation config the variants start from, checked like the curation job checks its own."""
    if cfg.ablation.curate_config:
        curate = load_settings(CurateConfig, cfg.ablation.curate_config, cfg.ablation.overrides)
    else:
        recorded = (layout.read_info() or {}).get("config")
        if not isinstance(recorded, dict):
            raise ConfigError(f"{layout.url} records no curation config; give ablation.curate_config=FILE")
        curate = settings_from_values(CurateConfig, recorded, f"{layout.url}/dataset.json", cfg.ablation.overrides)
    problems = curate.stage_problems()
    if problems:
        raise ConfigError("\n".join(f"ablation: {p}" for p in problems))
    return curate


def reference_audio(cfg: EvaluateConfig, references: dict[str, Reference], recorded: dict[str, str]) -> dict[str, str]:
    """Name -> audio of each reference recording: a file of that name in the reference folder, else the
    dataset's recorded source."""
    store = storage_for(cfg.refs, cfg.storage_options)
    found = {recording_name(name, references): store.show(store.join(store.root, name))
             for name in store.list_names(store.root) if name.rsplit(".", 1)[-1].lower() in INPUT_EXTENSIONS}
    return {name: found.get(name) or recorded[name] for name in references if name in found or name in recorded}


def main(cfg: EvaluateConfig, as_json: bool = False, ablate: bool = False) -> int:
    say = (lambda line: print(line, file=sys.stderr)) if as_json else print  # stdout holds only the JSON
    try:
        problems = cfg.problems()
        if problems:
            raise ConfigError("\n".join(problems))
        references = load_references(cfg.refs, cfg.storage_options)
        layout = DatasetLayout.of(cfg.dataset, cfg.storage_options).require()
        curate = ablation_config(cfg, layout) if ablate else None
    except (ConfigError, ReferenceError, DatasetError, StorageError) as e:
        error(e)
        return 2

    sources = dataset_sources(layout, references)  # name -> source of every recording with an outcome
    hypotheses = dataset_hypotheses(layout, sources)
    scores, overall = score_recordings(references, hypotheses, cfg.scoring)
    unreferenced = sorted(set(hypotheses) - set(references))
    say(f"evaluate: {len(references)} reference recordings, {sum(s.in_dataset for s in scores)} of them in "
        f"{layout.url}" + (f"; {len(unreferenced)} dataset recordings have no reference" if unreferenced else ""))

    ablation: Optional[dict[str, Optional[RecordingScore]]] = None
    if curate is not None:
        audio = reference_audio(cfg, references, sources)
        for name in sorted(set(references) - set(audio)):
            say(f"ablation: no audio for {name} (not in {cfg.refs} nor in the dataset): left out")
        subset = {name: references[name] for name in audio}
        variants = run_variants(curate, [audio[name] for name in sorted(audio)], references, say=say)
        ablation = {variant: None if labels is None else score_recordings(subset, labels, cfg.scoring)[1]
                    for variant, labels in variants.items()}

    out = Path(cfg.out)
    document = report_document(scores, overall, {"refs": cfg.refs, "dataset": cfg.dataset,
                                                 "scoring": dataclasses.asdict(cfg.scoring)}, ablation)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.json", json.dumps(document, indent=2).encode())
    plot = plot_report(scores, overall, out / "evaluation.png", ablation)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(format_table(scores, overall, ablation))
        print(f"collar {cfg.scoring.collar_seconds:g} s; report {out / 'report.json'}, plot {plot}")
    return 0


def parse_args(argv=None) -> tuple[EvaluateConfig, argparse.Namespace]:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    flags.add_argument("--ablate", action="store_true", help="score each post-processing rule switched off")
    switches, rest = flags.parse_known_args(argv)
    return parse_job_args(__doc__.splitlines()[0], EvaluateConfig, rest, name="evaluate", parents=[flags]), switches


if __name__ == "__main__":
    settings, switches = parse_args()
    sys.exit(main(settings, as_json=switches.json, ablate=switches.ablate))
