"""`python -m jobs.evaluate` on a dataset whose labels are known: the scores a user would check by hand,
the report's files, the ablation on two generated dialogs, and bad references refused before any work."""
import json
import subprocess
import sys

import pytest
import soundfile as sf

from jobs.build_models import curate_overrides
from tests.conftest import SAMPLE_RATE, write_dataset
from tests.jobs.conftest import REPO


def write_references(folder, dialogs):
    """RTTM, one transcript per recording, and the audio, as a user's reference folder holds them."""
    folder.mkdir()
    for source, dialog in dialogs:
        name = source.rsplit("/", 1)[1].removesuffix(".wav")
        (folder / f"{name}.rttm").write_text("".join(
            f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n"
            for t in dialog.turns))
        (folder / f"{name}.txt").write_text(" ".join(t.text for t in dialog.turns))
        sf.write(folder / f"{name}.wav", dialog.audio, SAMPLE_RATE)
    return folder


def evaluate(*arguments, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "jobs.evaluate", "--config", "configs/evaluate/default.yaml",
                           *map(str, arguments)], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_scores_of_a_dataset_whose_only_errors_are_its_rejected_turns(tmp_path, dialogs):
    # the dataset holds each turn with its true speaker and words, except turns under 0.8 s, rejected
    dataset = write_dataset(tmp_path / "ds", dialogs[:2])
    refs = write_references(tmp_path / "refs", dialogs[:2])
    done = evaluate(f"refs={refs}", f"dataset={dataset}", f"out={tmp_path / 'out'}", "scoring.collar_seconds=0",
                    "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    short = [t for _, d in dialogs[:2] for t in d.turns if t.end - t.start < 0.8]
    speech = sum(t.end - t.start for _, d in dialogs[:2] for t in d.turns)
    words = sum(len(t.text.split()) for _, d in dialogs[:2] for t in d.turns)
    overall = report["overall"]
    assert overall["speech_seconds"] == pytest.approx(speech, abs=0.01)
    assert overall["der"] == pytest.approx(sum(t.end - t.start for t in short) / speech, abs=1e-3)
    # times are rounded (samples in the dataset, milliseconds in RTTM): nothing else is missed or confused
    assert overall["missed"] == pytest.approx(overall["der"], abs=1e-3)
    assert overall["false_alarm"] < 1e-3 and overall["confusion"] < 1e-3
    assert overall["wer"] == pytest.approx(sum(len(t.text.split()) for t in short) / words)
    assert [r["name"] for r in report["recordings"]] == ["dialog-0", "dialog-1"]
    assert (tmp_path / "out" / "evaluation.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


def test_ablation_on_two_generated_dialogs(tmp_path, dialogs, offline_models):
    dataset = write_dataset(tmp_path / "ds", dialogs[:2])
    refs = write_references(tmp_path / "refs", dialogs[:2])
    overrides = ",".join(curate_overrides(offline_models) + ["quality.dnsmos=false"])
    done = evaluate(f"refs={refs}", f"dataset={dataset}", f"out={tmp_path / 'out'}", "--ablate",
                    "ablation.curate_config=configs/curate/demo.yaml", f"ablation.overrides=[{overrides}]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout
    for variant in ("full pipeline", "no cluster merging", "no chunk reassignment", "no segment merging",
                    "enhanced audio to diarization and ASR"):
        assert f"ablation: {variant}:" in table and f"\n{variant} " in table
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ablation = report["ablation"]
    assert set(ablation) == {"full pipeline", "no cluster merging", "no chunk reassignment", "no segment merging",
                             "enhanced audio to diarization and ASR"}
    for scores in ablation.values():
        assert 0 <= scores["der"] <= 2 and scores["wer"] is not None
        assert scores["speech_seconds"] == pytest.approx(report["overall"]["speech_seconds"])
    # without segment merging the pipeline's segments are its diarization turns: never fewer errors from
    # merging away a pause, and the ablation really changed the labels
    assert len({round(s["der"], 6) for s in ablation.values()}) > 1


def test_unreadable_references_are_refused_before_any_work(tmp_path, built_dataset):
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a.rttm").write_text("SPEAKER a 1 zero 1.0 <NA> <NA> alice <NA> <NA>\n")
    done = evaluate(f"refs={refs}", f"dataset={built_dataset}", f"out={tmp_path / 'out'}",
                    "scoring.collar_seconds=-1")
    assert done.returncode == 2
    assert "evaluate: error: scoring.collar_seconds=-1 must be >= 0" in done.stderr
    done = evaluate(f"refs={refs}", f"dataset={built_dataset}", f"out={tmp_path / 'out'}")
    assert done.returncode == 2 and "a.rttm:1: 'zero' is not a time in seconds" in done.stderr
    assert not (tmp_path / "out").exists()
