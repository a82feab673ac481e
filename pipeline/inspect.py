"""`audiomill-shards`: look inside a curated dataset (ls, stats, show, export, verify, plot, gc), and
make it readable by lhotse and megatron-energon in place (lhotse, energon).

DATASET is a local directory or a storage URL; credentials and endpoints come from the environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...) or the backend's config files.

Every subcommand but verify, show and export works from the manifests alone. Errors a user can act on
print one line and exit 2; verify exits 1 when it finds problems.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pyarrow.compute as pc

from pipeline.shards.codec import decode_audio
from pipeline.shards.layout import DatasetError, DatasetLayout, atomic_write
from pipeline.shards.manifest import MEMBER_AUDIO, MEMBER_ENHANCED, MEMBER_META, SHA_COLUMNS, read_manifest
from pipeline.shards.members import member_limits, read_one_member
from pipeline.shards.schema import SchemaError, is_valid_key, parse_record
from pipeline.shards.storage import StorageError
from pipeline.shards.stats import dataset_stats, format_stats, stats_json
from pipeline.shards.verify import verify_dataset


def find_row(layout: DatasetLayout, key: str) -> dict:
    """The manifest row of one sample key (DatasetError when no committed shard holds it)."""
    if not is_valid_key(key):
        raise DatasetError(f"{key!r} is not a sample key (expected RECORDINGID_NNNNNN)")
    table = read_manifest(layout, columns=["key", "shard", "has_enhanced", "size_bytes", *SHA_COLUMNS])
    rows = table.filter(pc.equal(table.column("key"), key)).to_pylist()
    if not rows:
        raise DatasetError(f"{layout.url}: no sample with key {key}")
    return rows[0]


def read_member(layout: DatasetLayout, row: dict, name: str) -> bytes:
    """One member of a sample's shard, found by exact name and checked against the manifest row (type and
    size) before it is read; never extracts anything to disk."""
    path, storage = layout.shard_tar(row["shard"]), layout.storage
    if not storage.is_file(path):
        raise DatasetError(f"shard {row['shard']}: {storage.show(path)} is missing (manifest without its tar)")
    with storage.open_read(path) as stream:
        return read_one_member(stream, name, member_limits([row]), storage.show(path))


def cmd_ls(layout: DatasetLayout, args) -> int:
    table = read_manifest(layout, columns=["shard", "recording_id", "duration", "size_bytes"])
    grouped = table.group_by("shard").aggregate([("duration", "count"), ("duration", "sum"),
                                                  ("recording_id", "count_distinct"), ("size_bytes", "sum")])
    rows = sorted(grouped.to_pylist(), key=lambda r: r["shard"])
    print(f"{'shard':<48}{'samples':>9}{'recordings':>12}{'hours':>10}{'MB':>10}")
    for r in rows:
        tar = layout.shard_tar(r["shard"])
        present = layout.storage.is_file(tar)
        size = layout.storage.size(tar) / 1e6 if present else float("nan")
        print(f"{r['shard']:<48}{r['duration_count']:>9}{r['recording_id_count_distinct']:>12}"
              f"{r['duration_sum'] / 3600:>10.3f}{size:>10.1f}" + ("" if present else "  (tar missing)"))
    print(f"{len(rows)} shards, {table.num_rows} samples, {(pc.sum(table.column('duration')).as_py() or 0) / 3600:.3f} h")
    return 0


def cmd_stats(layout: DatasetLayout, args) -> int:
    stats = dataset_stats(layout)
    print(stats_json(stats) if args.json else format_stats(stats))
    return 0


def cmd_show(layout: DatasetLayout, args) -> int:
    row = find_row(layout, args.key)
    try:
        record = parse_record(json.loads(read_member(layout, row, f"{args.key}.{MEMBER_META}")))
    except (ValueError, SchemaError) as e:
        raise DatasetError(f"{args.key}: metadata does not parse ({e})") from None
    if args.json:
        print(json.dumps({**record.to_dict(), "shard": row["shard"]}, indent=2, ensure_ascii=False))
        return 0
    meta = record.to_dict()
    words = meta.pop("words")
    text = meta.pop("text")
    conversation = meta.pop("conversation", None)
    meta["shard"] = row["shard"]
    for name, value in meta.items():
        if isinstance(value, dict):
            value = "  ".join(f"{k}={v}" for k, v in value.items())
        print(f"{name:<14}{value}")
    print(f"{'text':<14}{text if text is not None else '-'}")
    if conversation:
        print(f"conversation ({conversation['task_type']}, line {conversation['line']}):")
        for m in conversation["messages"]:
            audio = f"{m['num_samples'] / record.audio.sample_rate:.2f} s of audio ({m['audio_source']})" \
                if m["num_samples"] else ""
            print(f"  {m['role']:<10}{m['message_type']:<11}{audio}{'  ' if audio and m['text'] else ''}"
                  f"{m['text'] or ''}")
    if words:
        print("words:")
        for w in words:
            score = "" if w["score"] is None else f"  ({w['score']:.2f})"
            print(f"  {w['start']:9.2f} {w['end']:9.2f}  {w['word']}{score}")
    return 0


def cmd_export(layout: DatasetLayout, args) -> int:
    import soundfile as sf

    row = find_row(layout, args.key)
    suffix = MEMBER_ENHANCED if args.enhanced else MEMBER_AUDIO
    if args.enhanced and not row["has_enhanced"]:
        raise DatasetError(f"{args.key}: no enhanced audio stored")
    try:
        audio, sample_rate = decode_audio(read_member(layout, row, f"{args.key}.{suffix}"))
    except sf.LibsndfileError as e:
        raise DatasetError(f"{args.key}.{suffix} does not decode ({e})") from None
    if args.out == "-":  # standard output only when asked for by name
        buffer = io.BytesIO()
        sf.write(buffer, audio, sample_rate, format="WAV", subtype="PCM_16")
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        print(f"wrote standard output ({len(audio) / sample_rate:.2f} s at {sample_rate} Hz)", file=sys.stderr)
        return 0
    out = export_path(args.out, args.force)
    # The output path comes from the user only; member names never become paths.
    atomic_write(out, lambda f: sf.write(f, audio, sample_rate, format="WAV", subtype="PCM_16"))
    print(f"wrote {out} ({len(audio) / sample_rate:.2f} s at {sample_rate} Hz)")
    return 0


def export_path(out: str, force: bool) -> Path:
    """The file `export --out` may write: never a directory, a device or a link, an existing file only with
    --force (DatasetError otherwise, before anything is read or written)."""
    if not out.strip():
        raise DatasetError("--out is empty: give a .wav file path, or - for standard output")
    path = Path(out)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise DatasetError(f"--out {out} is {kind}: give a .wav file path (or - for standard output)")
    if path.exists() and not force:
        raise DatasetError(f"--out {out} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise DatasetError(f"--out {out}: no such directory {path.parent}")
    return path


def cmd_verify(layout: DatasetLayout, args) -> int:
    def progress(i: int, n: int, shard: str) -> None:
        if not args.quiet:
            print(f"[{i + 1}/{n}] {shard}", file=sys.stderr)

    checked, problems = verify_dataset(layout, progress)
    for p in problems:
        print(p)
    print(f"{checked} samples in {len(layout.committed_shards())} shards checked, {len(problems)} problems")
    superseded = read_manifest(layout, columns=["key"], superseded=True).num_rows
    if superseded:  # not a problem: readers skip them (see manifest.duplicate_owners)
        print(f"{superseded} superseded duplicate samples left by a retried write (readers skip them; "
              f"`audiomill-shards gc` removes shards holding nothing else)")
    return 1 if problems else 0


def garbage(layout: DatasetLayout, grace_seconds: float) -> list[str]:
    """What gc may delete, in a safe order: orphans older than the grace period (temp files, tars no
    manifest commits), then each shard whose every row is a superseded duplicate, manifest before tar
    (so it is never a manifest without its tar). Nothing a counted manifest row references."""
    counted = set(read_manifest(layout, columns=["shard"]).column("shard").to_pylist())
    duplicates = set(read_manifest(layout, columns=["shard"], superseded=True).column("shard").to_pylist())
    doomed = []
    for shard in sorted(duplicates - counted):
        doomed += [layout.shard_manifest(shard), layout.shard_tar(shard)]
    return layout.orphans(min_age_seconds=grace_seconds) + doomed


def cmd_gc(layout: DatasetLayout, args) -> int:
    doomed = garbage(layout, args.grace_seconds)
    for path in doomed:
        if not args.dry_run:
            layout.storage.remove(path)
        print(f"{'would remove' if args.dry_run else 'removed'} {layout.storage.show(path)}")
    print(f"{len(doomed)} files {'to remove' if args.dry_run else 'removed'}")
    return 0


def cmd_lhotse(layout: DatasetLayout, args) -> int:
    from pipeline.shards.to_lhotse import write_cutset

    path, count = write_cutset(layout, Path(args.out))
    print(f"wrote {path}: {count} cuts reading the audio in place (lhotse: CutSet.from_file)")
    return 0


def cmd_energon(layout: DatasetLayout, args) -> int:
    from pipeline.shards.to_energon import energon_path, write_energon_meta

    shards = write_energon_meta(layout)
    print(f"indexed {shards} shard(s) for megatron-energon in {layout.url}/.nv-meta (split train, samples: "
          f"pipeline.shards.to_energon.AudiomillSample); energon reads it as {energon_path(layout)}")
    return 0


def cmd_plot(layout: DatasetLayout, args) -> int:
    from pipeline.shards.plots import plot_dataset  # matplotlib loads only for this subcommand

    out = Path(args.out)
    if not args.out.strip() or (out.exists() and not out.is_dir()):
        raise DatasetError(f"--out {args.out!r} is not a directory: plot writes one PNG per figure into a folder")
    for path in plot_dataset(layout, out):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audiomill-shards", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("dataset", help="curated dataset: a directory or a storage URL (s3://bucket/name, ...)")
        p.set_defaults(handler=handler)
        return p

    add("ls", cmd_ls, "shards with sample counts, hours and sizes")
    add("stats", cmd_stats, "totals and distributions from the manifests").add_argument(
        "--json", action="store_true", help="print JSON instead of a table")
    show = add("show", cmd_show, "metadata and transcript of one sample")
    show.add_argument("key")
    show.add_argument("--json", action="store_true")
    export = add("export", cmd_export, "write one sample's audio as WAV")
    export.add_argument("key")
    export.add_argument("--out", required=True, help="output .wav file (- for standard output)")
    export.add_argument("--force", action="store_true", help="replace an existing output file")
    export.add_argument("--enhanced", action="store_true", help="the enhanced audio instead of the original")
    add("verify", cmd_verify, "check every tar against its manifest").add_argument(
        "--quiet", action="store_true", help="no per-shard progress")
    gc = add("gc", cmd_gc, "remove orphans of crashed writers and shards holding only superseded duplicates")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument("--grace-seconds", type=float, default=3600.0,
                    help="leave orphans younger than this (a live job's writer may be between tar and manifest)")
    add("plot", cmd_plot, "PNG histograms of durations, languages, quality and speakers").add_argument(
        "--out", required=True, help="output directory")
    add("lhotse", cmd_lhotse, "a lhotse CutSet manifest of the samples, reading the audio inside the tars"
        ).add_argument("--out", required=True, help="output directory (cuts.jsonl.gz)")
    add("energon", cmd_energon, "index the shards for megatron-energon (DATASET/.nv-meta), read in place")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        layout = DatasetLayout.of(args.dataset).require()
        return args.handler(layout, args)
    except (DatasetError, StorageError) as e:
        print(f"audiomill-shards: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`
        return 0
    except OSError as e:  # a path the user gave that cannot be written or read
        print(f"audiomill-shards: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
