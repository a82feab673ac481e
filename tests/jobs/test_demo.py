"""`python -m jobs.demo` end to end on a small config: generated speech -> shards -> inspection."""
import json
import subprocess
import sys

from pipeline.shards import DatasetLayout, iter_samples
from pipeline.shards.manifest import read_manifest


def run_demo(workdir):
    return subprocess.run([sys.executable, "-m", "jobs.demo", "--config", "configs/demo.yaml", f"workdir={workdir}",
                           "recordings=3", "turns_per_recording=[3,4]", "shards.target_samples=6"],
                          capture_output=True, text=True, timeout=300)


def test_demo_builds_a_verified_dataset_and_reruns_add_nothing(tmp_path):
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "0 problems" in first.stdout
    dataset = tmp_path / "dataset"
    layout = DatasetLayout.of(dataset)
    rows = read_manifest(layout).to_pylist()
    truth = [json.loads(p.read_text()) for p in sorted((tmp_path / "raw").glob("*.truth.json"))]
    n_turns = sum(len(t["turns"]) for t in truth)
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["totals"]["segments"] + info["totals"]["rejected"] == n_turns  # every turn ends in one place
    assert {r["text"] for r in rows} <= {turn["text"] for t in truth for turn in turn_list(t)}
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4

    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "committed 0 new shards" in second.stdout
    keys = [s.key for s in iter_samples(dataset)]
    assert sorted(keys) == sorted(r["key"] for r in rows) and len(keys) == len(set(keys))


def turn_list(truth):
    return truth["turns"]
