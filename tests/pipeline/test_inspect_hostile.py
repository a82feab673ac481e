"""Tampered datasets and careless paths given to `audiomill-shards`, the reader and the writer: one clear
error each, nothing read past its limit, nothing written where it should not be."""
import io
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.shards import DatasetError, DatasetLayout, iter_samples
from tests.pipeline.test_inspect import assert_clean_error, manifest_rows, shards_cli


def rewrite_tar(tar, replace):
    """Rewrite a shard with `replace(info, data)` -> list of (TarInfo, bytes) for each member."""
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            for new_info, new_data in replace(info, data):
                t.addfile(new_info, None if new_data is None else io.BytesIO(new_data))


@pytest.fixture
def sparse_bomb(dataset_copy, tmp_path):
    """A shard whose first sample's FLAC is a GNU sparse member: about 1 MB on disk, 6 GiB when read."""
    row = manifest_rows(dataset_copy)[0]
    tar = dataset_copy / "shards" / f"{row['shard']}.tar"
    work = tmp_path / "members"
    work.mkdir()
    with tarfile.open(tar) as t:
        names = t.getnames()
        t.extractall(work, filter="data")
    bomb = work / f"{row['key']}.flac"
    with open(bomb, "r+b") as f:
        f.truncate(6 << 30)
        f.seek(3 << 30)
        f.write(os.urandom(1 << 20))
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(tar), "-C", str(work), *names], check=True)
    assert tar.stat().st_size < 8 << 20
    return dataset_copy, row


def test_a_sparse_tar_bomb_is_refused_not_read(sparse_bomb):
    dataset, row = sparse_bomb
    started = time.perf_counter()
    result = shards_cli("verify", dataset, "--quiet")
    assert result.returncode == 1, result.stderr
    assert f"'{row['key']}.flac' is a sparse file, not a regular file (refused)" in result.stdout
    assert f"{row['key']}: missing member {row['key']}.flac" in result.stdout
    with pytest.raises(DatasetError, match="sparse file"):
        for _ in iter_samples(dataset):
            pass
    assert_clean_error(shards_cli("export", dataset, row["key"], "--out", dataset.parent / "x.wav"))
    assert time.perf_counter() - started < 60  # reading 6 GiB would take far longer, or fail


def test_a_member_larger_than_its_manifest_says_is_refused(dataset_copy):
    row = manifest_rows(dataset_copy)[0]
    tar = dataset_copy / "shards" / f"{row['shard']}.tar"

    def grow(info, data):
        if info.name == f"{row['key']}.json":
            data = data + b" " * (row["size_bytes"] + 1)
            info.size = len(data)
        return [(info, data)]

    rewrite_tar(tar, grow)
    result = shards_cli("verify", dataset_copy, "--quiet")
    assert result.returncode == 1 and f"more than its limit of {row['size_bytes']}" in result.stdout
    assert_clean_error(shards_cli("show", dataset_copy, row["key"]))


@pytest.mark.parametrize("suffix,command", [("json", "show"), ("flac", "export")])
def test_a_symlinked_member_is_a_clean_error(dataset_copy, tmp_path, suffix, command):
    row = manifest_rows(dataset_copy)[0]
    tar = dataset_copy / "shards" / f"{row['shard']}.tar"

    def link(info, data):
        if info.name != f"{row['key']}.{suffix}":
            return [(info, data)]
        symlink = tarfile.TarInfo(info.name)
        symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return [(symlink, None)]

    rewrite_tar(tar, link)
    out = ["--out", tmp_path / "a.wav"] if command == "export" else []
    result = shards_cli(command, dataset_copy, row["key"], *out)
    assert_clean_error(result)
    assert "is a symlink, not a regular file" in result.stderr
    assert not (tmp_path / "a.wav").exists()
    verify = shards_cli("verify", dataset_copy, "--quiet")
    assert verify.returncode == 1 and "is a symlink" in verify.stdout


def test_a_foreign_parquet_file_in_the_manifest_is_named(dataset_copy):
    junk = dataset_copy / "manifest" / "junk.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}), junk)
    for command in ("ls", "stats", "verify"):
        result = shards_cli(command, dataset_copy)
        assert_clean_error(result)
        assert "junk.parquet" in result.stderr and "no column 'key'" in result.stderr


def test_a_manifest_row_naming_another_shard_is_refused(dataset_copy):
    row = manifest_rows(dataset_copy)[0]
    part = dataset_copy / "manifest" / f"{row['shard']}.parquet"
    table = pq.read_table(part)
    shard = pa.array(["../../../etc/passwd"] * table.num_rows)
    pq.write_table(table.set_column(table.schema.get_field_index("shard"), "shard", shard), part)
    result = shards_cli("show", dataset_copy, row["key"])
    assert_clean_error(result)
    assert "rows name another shard" in result.stderr


def test_export_refuses_to_clobber(built_dataset, tmp_path):
    row = manifest_rows(built_dataset)[0]
    existing = tmp_path / "existing.wav"
    existing.write_bytes(b"mine")
    os.chmod(existing, 0o644)
    result = shards_cli("export", built_dataset, row["key"], "--out", existing)
    assert_clean_error(result)
    assert "--force" in result.stderr and existing.read_bytes() == b"mine"
    assert shards_cli("export", built_dataset, row["key"], "--out", existing, "--force").returncode == 0
    assert sf.info(str(existing)).samplerate == 16000

    link = tmp_path / "stdout-link"
    link.symlink_to("/dev/stdout")
    for out in (link, tmp_path, "", "/"):
        result = shards_cli("export", built_dataset, row["key"], "--out", out, "--force")
        assert_clean_error(result)
        assert len(result.stderr.strip().splitlines()) == 1
    assert link.is_symlink()

    plot_file = tmp_path / "plot.png"
    plot_file.write_bytes(b"")
    assert_clean_error(shards_cli("plot", built_dataset, "--out", plot_file))


def test_export_to_standard_output_only_when_asked(built_dataset):
    import sys

    row = manifest_rows(built_dataset)[0]
    result = subprocess.run([sys.executable, "-m", "pipeline.inspect", "export", str(built_dataset), row["key"],
                             "--out", "-"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(io.BytesIO(result.stdout))
    assert rate == 16000 and len(audio) == row["num_samples"]


def test_files_get_the_modes_the_umask_gives(tmp_path, dialogs):
    from tests.conftest import write_dataset

    old = os.umask(0o022)
    try:
        root = write_dataset(tmp_path / "ds", dialogs[:1])
        row = manifest_rows(root)[0]
        out = tmp_path / "clip.wav"
        assert shards_cli("export", root, row["key"], "--out", out).returncode == 0
    finally:
        os.umask(old)
    layout = DatasetLayout.of(root)
    files = [Path(layout.info), out, *Path(layout.manifest).iterdir(), *Path(layout.shards).iterdir(),
             *Path(layout.rejected).iterdir()]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}
