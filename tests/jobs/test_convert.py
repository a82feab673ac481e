"""`python -m jobs.convert` as users run it: Qwen2 in, Kimi-Audio layout out and back, bit-exact."""
import subprocess
import sys

import torch
from safetensors.torch import load_file

from model.tiny_folders import write_tiny_qwen2, write_tiny_whisper
from tests.jobs.conftest import REPO


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.convert", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_help_lists_the_commands():
    result = convert("--help")
    assert result.returncode == 0
    assert all(c in result.stdout for c in ("import-qwen2", "import-kimi", "export-kimi"))


def test_qwen2_to_checkpoint_to_kimi_layout_and_back(tmp_path):
    qwen, whisper = write_tiny_qwen2(tmp_path / "qwen2"), write_tiny_whisper(tmp_path / "whisper")
    steps = [("import-qwen2", "--qwen2", qwen, "--whisper", whisper, "--text-head-layers", 1,
              "--audio-head-layers", 1, "--audio-vocab", 512, "--out", tmp_path / "ckpt"),
             ("export-kimi", "--checkpoint", tmp_path / "ckpt", "--out", tmp_path / "kimi"),
             ("import-kimi", "--kimi", tmp_path / "kimi", "--out", tmp_path / "ckpt2"),
             ("export-kimi", "--checkpoint", tmp_path / "ckpt2", "--out", tmp_path / "kimi2")]
    for step in steps:
        result = convert(*step)
        assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "whisper-large-v3/model.safetensors"):
        first, second = load_file(str(tmp_path / "kimi" / name)), load_file(str(tmp_path / "kimi2" / name))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    qwen_weights = load_file(str(qwen / "model.safetensors"))
    exported = load_file(str(tmp_path / "kimi" / "model.safetensors"))
    assert torch.equal(exported["model.layers.2.self_attn.q_proj.weight"],
                       qwen_weights["model.layers.2.self_attn.q_proj.weight"])


def test_errors_are_one_line_and_exit_2(tmp_path):
    result = convert("import-kimi", "--kimi", tmp_path / "missing", "--out", tmp_path / "out")
    assert result.returncode == 2 and "convert: error:" in result.stderr and "config.json" in result.stderr
    (tmp_path / "exists").mkdir()
    result = convert("export-kimi", "--checkpoint", tmp_path, "--out", tmp_path / "exists")
    assert result.returncode == 2 and "exists" in result.stderr
