"""Every `audiomill-shards` subcommand, run as a user runs it: a subprocess on a generated-speech dataset."""
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import soundfile as sf

from pipeline.shards import DatasetLayout
from pipeline.shards.manifest import read_manifest

CONSOLE_SCRIPT = Path(sys.executable).parent / "audiomill-shards"


def shards_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.inspect", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def manifest_rows(root):
    return read_manifest(DatasetLayout.of(root)).to_pylist()


def assert_clean_error(result):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("audiomill-shards: error:")


def test_console_script_is_installed(built_dataset):
    result = subprocess.run([str(CONSOLE_SCRIPT), "ls", str(built_dataset)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ls_lists_every_shard_with_counts(built_dataset):
    result = shards_cli("ls", built_dataset)
    assert result.returncode == 0, result.stderr
    rows = manifest_rows(built_dataset)
    for shard in DatasetLayout.of(built_dataset).committed_shards():
        line = next(l for l in result.stdout.splitlines() if l.startswith(shard))
        assert int(line.split()[1]) == sum(r["shard"] == shard for r in rows)
    assert f"{len(rows)} samples" in result.stdout


def test_stats_json_matches_the_manifests(built_dataset, dialogs):
    result = shards_cli("stats", built_dataset, "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    rows = manifest_rows(built_dataset)
    hours = sum(r["duration"] for r in rows) / 3600
    assert stats["totals"]["segments"] == len(rows)
    assert stats["totals"]["recordings"] == len(dialogs)
    assert stats["totals"]["hours"] == pytest.approx(hours)
    assert stats["languages"] == [{"language": "en", "count": len(rows), "hours": pytest.approx(hours)}]
    speakers = {rid: len({r["speaker"] for r in rows if r["recording_id"] == rid}) for rid in {r["recording_id"] for r in rows}}
    assert stats["speakers_per_recording"]["histogram"] == {
        str(k): list(speakers.values()).count(k) for k in set(speakers.values())}
    durations = sorted(r["duration"] for r in rows)
    assert stats["duration_seconds"]["min"] == pytest.approx(durations[0])
    assert stats["duration_seconds"]["max"] == pytest.approx(durations[-1])
    assert stats["quality"]["dnsmos_ovrl"]["p50"] == pytest.approx(3.2)
    n_rejected = stats["totals"]["rejected"]
    assert n_rejected > 0 and stats["rejected_by_reason"][0]["reason"] == "too_short"
    assert stats["rejected_by_reason"][0]["count"] == n_rejected


def test_stats_table_is_readable(built_dataset):
    result = shards_cli("stats", built_dataset)
    assert result.returncode == 0, result.stderr
    assert "segments" in result.stdout and "duration_seconds" in result.stdout
    assert "filter/too_short" in result.stdout


def test_show_prints_metadata_and_word_times(built_dataset):
    row = manifest_rows(built_dataset)[0]
    result = shards_cli("show", built_dataset, row["key"])
    assert result.returncode == 0, result.stderr
    assert row["text"] in result.stdout and row["shard"] in result.stdout
    first_word = row["text"].split()[0]
    assert any(l.split()[-2:-1] == [first_word] or first_word in l for l in result.stdout.splitlines()
               if l.startswith("  "))
    as_json = json.loads(shards_cli("show", built_dataset, row["key"], "--json").stdout)
    assert as_json["key"] == row["key"] and as_json["words"][0]["word"] == first_word


@pytest.mark.parametrize("enhanced", [False, True])
def test_export_writes_the_sample_as_wav(built_dataset, tmp_path, enhanced):
    row = manifest_rows(built_dataset)[1]
    out = tmp_path / "clip.wav"
    result = shards_cli("export", built_dataset, row["key"], "--out", out, *(["--enhanced"] if enhanced else []))
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == row["num_samples"]
    assert list(tmp_path.iterdir()) == [out]


def test_verify_passes_on_a_good_dataset(built_dataset):
    result = shards_cli("verify", built_dataset)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems" in result.stdout


def test_verify_fails_with_shard_and_key(dataset_copy):
    shard = DatasetLayout.of(dataset_copy).committed_shards()[0]
    tar = dataset_copy / "shards" / f"{shard}.tar"
    with tarfile.open(tar) as t:
        last = t.getmembers()[-1]
    tar.write_bytes(tar.read_bytes()[: last.offset_data + last.size // 2])  # cut inside the last member
    result = shards_cli("verify", dataset_copy)
    assert result.returncode == 1
    assert f"{shard}: tar is truncated" in result.stdout
    assert "Traceback" not in result.stderr


def test_plot_writes_the_histograms(built_dataset, tmp_path):
    result = shards_cli("plot", built_dataset, "--out", tmp_path / "plots")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["hours_per_language.png", "quality_scores.png", "segment_duration.png",
                     "speakers_per_recording.png"]
    for p in (tmp_path / "plots").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


# ---- clear errors, no tracebacks -------------------------------------------------------------

def test_not_a_dataset(tmp_path):
    for command in (["ls"], ["stats"], ["verify"], ["show", "x"], ["plot", "--out", tmp_path / "p"]):
        assert_clean_error(shards_cli(command[0], tmp_path, *command[1:]))
        assert_clean_error(shards_cli(command[0], tmp_path / "nope", *command[1:]))


def test_missing_and_malformed_keys(built_dataset, tmp_path):
    result = shards_cli("show", built_dataset, "0123456789abcdef_000099")
    assert_clean_error(result)
    assert "no sample with key" in result.stderr
    assert_clean_error(shards_cli("export", built_dataset, "../../x", "--out", tmp_path / "a.wav"))


def test_show_on_truncated_tar_and_on_missing_tar(dataset_copy):
    rows = manifest_rows(dataset_copy)
    last_of_shard = [r for r in rows if r["shard"] == rows[0]["shard"]][-1]
    tar = dataset_copy / "shards" / f"{rows[0]['shard']}.tar"
    tar.write_bytes(tar.read_bytes()[:2048])
    result = shards_cli("show", dataset_copy, last_of_shard["key"])
    assert_clean_error(result)
    tar.unlink()
    result = shards_cli("show", dataset_copy, last_of_shard["key"])
    assert_clean_error(result)
    assert "missing" in result.stderr


def test_export_never_writes_outside_out(dataset_copy, tmp_path):
    """A hostile tar with traversal names: export reads members by exact name and writes only --out."""
    rows = manifest_rows(dataset_copy)
    row = rows[0]
    tar = dataset_copy / "shards" / f"{row['shard']}.tar"
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w") as t:
        for info, data in members:
            if info.name == f"{row['key']}.flac":  # same bytes, under a traversal name first
                evil = tarfile.TarInfo(f"../../{row['key']}.flac")
                evil.size = len(data)
                t.addfile(evil, io.BytesIO(data))
            t.addfile(info, io.BytesIO(data))
    workdir = tmp_path / "work" / "sub"
    workdir.mkdir(parents=True)
    result = shards_cli("export", dataset_copy, row["key"], "--out", "clip.wav", cwd=workdir)
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                     and not p.is_relative_to(dataset_copy))
    assert written == ["work/sub/clip.wav"]
