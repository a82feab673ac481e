"""A curated dataset readable by megatron-energon in place: the `.nv-meta/` that `energon prepare` writes.

Energon reads WebDataset tars through an index of its own (`.nv-meta/index.sqlite`, `split.yaml`,
`.info.json`) and a `dataset.yaml` naming the sample type. `write_energon_meta` builds the index with
energon's own preparator over the committed shards (one split, `train`, holding them all, in shard-name
order) and declares the sample type `AudiomillSample` below, loaded by `sample_loader` (energon has no
audio sample type of its own; a CrudeWebdataset would leave `energon info` and `energon lint` without a
type to show or load). Energon's own AV decoder decodes the FLAC members. Nothing is copied. Training
code gets `AudiomillSample`s from `get_train_dataset` / `get_loader` with any task encoder.

On object storage energon reads through multi-storage-client (MSC): `s3://bucket/prefix` is
`msc://_s3-bucket/prefix`, MSC's implicit profile for the bucket, which takes its endpoint and credentials
from the standard AWS_* environment (or a profile of that name in the MSC config). The index is written
through the same path energon will read, and `energon_path` gives it to the user.

Energon indexes tars, not manifests: a shard holding a superseded duplicate (a retried writer's second
commit of a recording) would be read with it, so such a dataset is refused until `audiomill-shards gc`
has removed the shards that hold nothing else; a shard that mixes kept and superseded samples is named.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from megatron.energon import Sample

from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.manifest import MEMBER_SUFFIXES, read_manifest
from pipeline.shards.storage import LocalStorage, is_url, protocol_of

MSC_PROTOCOLS = ("s3", "gs", "ais")  # object stores MSC reaches through implicit profiles

DATASET_YAML = f"""\
# audiomill dataset for megatron-energon (audiomill-shards energon); the shards stay where they are
sample_type:
  __module__: pipeline.shards.to_energon
  __class__: AudiomillSample
sample_loader: sample_loader.py:sample_loader
part_filter: [{", ".join(MEMBER_SUFFIXES)}]
"""
SAMPLE_LOADER_PY = """\
# energon loads this file by path (dataset.yaml); the loader is audiomill's own
from pipeline.shards.to_energon import sample_loader  # noqa: F401
"""


@dataclass
class AudiomillSample(Sample):
    """One curated segment as energon yields it: `audio` (channels, samples) float32 at `sample_rate`,
    `enhanced` likewise or None, `record` the KEY.json dict (pipeline.shards.schema), `tokens` the semantic
    ids or None."""
    audio: Any
    sample_rate: int
    record: dict
    enhanced: Optional[Any] = None
    tokens: Optional[Any] = None


def sample_loader(raw: dict) -> dict:
    """Energon's decoded members of one key -> the fields of an AudiomillSample."""
    import torch

    def audio(member):
        if member is None:
            return None
        clip = member.get_audio().audio_clips[0]  # PyAV gives FLAC's integer samples: scale to [-1, 1)
        return clip.float() / (torch.iinfo(clip.dtype).max + 1) if not clip.dtype.is_floating_point else clip

    return {"audio": audio(raw["flac"]), "sample_rate": raw["json"]["audio"]["sample_rate"], "record": raw["json"],
            "enhanced": audio(raw.get("enh.flac")), "tokens": raw.get("tok.npy")}


def energon_shards(layout: DatasetLayout) -> list[str]:
    """The shard tars energon may index (paths relative to the dataset root)."""
    kept = set(read_manifest(layout, columns=["shard"]).column("shard").to_pylist())
    superseded = set(read_manifest(layout, columns=["shard"], superseded=True).column("shard").to_pylist())
    mixed = sorted(kept & superseded)
    if mixed:
        raise DatasetError(f"{layout.url}: shard(s) {', '.join(mixed)} hold superseded duplicates beside kept "
                           "samples, and energon indexes whole tars: it would read both")
    if superseded:
        raise DatasetError(f"{layout.url}: {len(superseded)} shard(s) hold only superseded duplicates: run "
                           "`audiomill-shards gc` first")
    return [f"shards/{name}.tar" for name in sorted(kept)]


def energon_path(layout: DatasetLayout) -> str:
    """The dataset as energon names it: a local path, or MSC's implicit profile for an object store."""
    if isinstance(layout.storage, LocalStorage):
        return layout.root
    url = layout.url.rstrip("/")
    protocol = protocol_of(url) if is_url(url) else ""
    if protocol not in MSC_PROTOCOLS:
        raise DatasetError(f"{layout.url}: energon reaches object stores through multi-storage-client, which "
                           f"has no implicit profile for {protocol}:// (it has {', '.join(MSC_PROTOCOLS)})")
    bucket_and_prefix = url.split("://", 1)[1]
    bucket, _, prefix = bucket_and_prefix.partition("/")
    return f"msc://_{protocol}-{bucket}/{prefix}"


def write_energon_meta(layout: DatasetLayout, workers: int = 4) -> int:
    """Index the committed shards for energon under `DATASET/.nv-meta/`; the number of shards indexed."""
    from megatron.energon.epathlib import EPath
    from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

    root = energon_path(layout)
    tars = energon_shards(layout)
    if not tars:
        raise DatasetError(f"{layout.url}: no committed shards to index")
    WebdatasetPreparator.prepare_dataset(EPath(root), tars, split_parts_ratio=[("train", 1.0)],
                                         shuffle_seed=None, workers=workers)
    meta = layout.storage.join(layout.root, ".nv-meta")
    layout.storage.write_bytes(layout.storage.join(meta, "dataset.yaml"), DATASET_YAML.encode())
    layout.storage.write_bytes(layout.storage.join(meta, "sample_loader.py"), SAMPLE_LOADER_PY.encode())
    return len(tars)
