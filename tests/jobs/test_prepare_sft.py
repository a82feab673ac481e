"""`python -m jobs.prepare_sft` on the shared Ray cluster: conversations in the released JSONL format become
one sample each, bad lines and unreadable audio are recorded with their line numbers, a rerun adds nothing."""
import json
import subprocess
import sys

from pipeline.inspect import main as shards_cli
from pipeline.shards import DatasetLayout, iter_samples
from pipeline.shards.manifest import read_failed, read_manifest
from tests.jobs.conftest import REPO, ray_env


def conversation(task_type, *messages):
    return json.dumps({"task_type": task_type, "conversation": [
        {"role": role, "message_type": kind, "content": content} for role, kind, content in messages]})


def test_conversations_are_prepared_exactly_once_with_bad_lines_recorded(ray_cluster, spoken_inputs, offline_models,
                                                                         tmp_path):
    folder, truth = spoken_inputs
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    lines = [
        conversation("understanding", ("user", "audio", str(folder / "dialog-0.wav")),  # instruction drawn
                     ("assistant", "text", truth[str(folder / "dialog-0.wav")])),
        "{this line is not json",
        conversation("understanding", ("user", "text", "Who speaks second?"),
                     ("user", "audio", str(folder / "dialog-1.wav")), ("assistant", "text", "The second voice.")),
        conversation("understanding", ("user", "audio", "broken.wav"), ("assistant", "text", "Nothing.")),
        conversation("speech2speech", ("user", "audio", str(folder / "dialog-2.wav")),
                     ("assistant", "audio-text", [str(folder / "dialog-3.wav"), truth[str(folder / "dialog-3.wav")]])),
    ]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    dataset = tmp_path / "sft"
    command = [sys.executable, "-m", "jobs.prepare_sft", "--config", "configs/sft/prepare_demo.yaml",
               f"input={jsonl}", f"output={dataset}", f"tokenize.model={offline_models['tokenizer']}",
               "ray.progress_bars=false", "shards.target_samples=2"]
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "5 conversations" in first.stdout and "(1 refused as they stand" in first.stdout

    layout = DatasetLayout.of(dataset)
    samples = {s.record.conversation.line: s for s in iter_samples(dataset)}
    assert sorted(samples) == [1, 3, 5]
    drawn = samples[1].record.conversation.messages[0]
    assert drawn.role == "user" and drawn.message_type == "text" and drawn.text  # from configs/sft/instructions.yaml
    assert samples[3].record.conversation.messages[0].text == "Who speaks second?"
    s2s = samples[5].record.conversation
    assert s2s.task_type == "speech2speech" and s2s.messages[-1].message_type == "audio-text"
    assert sum(m.num_tokens for m in s2s.messages if m.num_tokens) == len(samples[5].tokens)
    failed = {row["message"].split(":")[0]: row for row in read_failed(layout).to_pylist()}
    assert set(failed) == {"line 2", "line 4"}
    assert failed["line 2"]["stage"] == "parse" and "not JSON" in failed["line 2"]["message"]
    assert failed["line 4"]["stage"] == "decode" and "broken.wav" in failed["line 4"]["message"]
    assert shards_cli(["verify", str(dataset)]) == 0 and shards_cli(["stats", str(dataset)]) == 0

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "5 already done, 0 to prepare" in again.stdout
    assert read_manifest(layout).num_rows == 3 and read_failed(layout).num_rows == 2
