"""The only module that imports Ray: runs the curation stages as a streaming Ray Data pipeline.

decode (tasks, one source each) -> model stages (actor pools: the model loads once per actor)
-> pack (tasks: encode FLAC/JSON/npy) -> write (tasks committing shards to the dataset's storage,
pipeline/stages/write.py) -> the driver, which only tallies small outcome records: no audio reaches it.
A stage without a model (fixed windows) runs inside the decode tasks instead of a pool of its own, and
when no model stage is left, so does pack: the audio then never travels between processes, only its FLAC.
Ray Data streams blocks with backpressure, so memory stays bounded whatever the number of inputs.
`RAY_ADDRESS` (set by `ray job submit`) selects a cluster; without it Ray starts embedded.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from itertools import takewhile
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional

import numpy as np

from pipeline.audio import PCM16_SCALE, scaled_pcm16
from pipeline.capacity import (
    PoolResources, cluster_nodes, memory_bytes, pool_bounds, stage_demands, task_threads, unschedulable,
)
from pipeline.shards.schema import PipelineInfo
from pipeline.stages.base import Stage, run_stage
from pipeline.stages.decode import decode_sessions
from pipeline.stages.pack import pack_recording
from pipeline.stages.work import RecordingWork
from pipeline.stages.write import RecordingOutcome, WriteSettings, write_recordings

if TYPE_CHECKING:
    from pipeline.config import CurateConfig


@dataclass(frozen=True)
class RaySettings:
    """The `ray` section. `local_num_cpus`: an embedded Ray's CPUs (None: every core); the input is cut into
    at most `input_blocks` blocks; blocks close at `target_max_block_mb`, so a session (115 MB an hour)
    leaves each stage as its own block, at once. On a cluster the job waits up to `schedule_timeout_s` for
    nodes that can hold the pools."""
    local_num_cpus: Optional[int] = None
    input_blocks: int = 1000
    target_max_block_mb: float = 16.0
    progress_bars: bool = True
    log_to_driver: bool = True
    schedule_timeout_s: float = 600.0

    def problems(self) -> list[str]:
        problems = []
        if self.local_num_cpus is not None and self.local_num_cpus < 1:
            problems.append(f"ray.local_num_cpus={self.local_num_cpus} must be >= 1 (or null: every core)")
        if self.input_blocks < 1 or not self.target_max_block_mb > 0 or self.schedule_timeout_s < 0:
            problems.append("ray: need input_blocks >= 1, target_max_block_mb > 0 and schedule_timeout_s >= 0")
        return problems


@dataclass(frozen=True)
class StagePlan:
    """A stage and how Ray runs it (from the `resources.<name>` config section). `in_task`: the stage has
    no model to load once, so it runs inside the decode tasks (it must come before every model stage)."""
    name: str
    make: Callable[[], Stage]
    resources: PoolResources
    in_task: bool = False


# Audio travels in its own columns, as Arrow tensors: Ray Data would otherwise pickle it inside the work
# record at every stage boundary (a copy of each session's audio per stage, in and out). It travels as
# 16-bit PCM, half of float32's memory in the object store and in every worker holding a block; the
# shards store 16-bit FLAC, so nothing that is kept is lost. Stages see float32, PCM / 32768: libsndfile's
# own scale, so pack encodes the PCM as it is and the FLAC is byte for byte what the float audio would
# give. A stage that hands a recording's audio on unchanged (all but decode) hands on its PCM too.
_NO_AUDIO = np.zeros(0, dtype=np.int16)


def to_pcm16(audio: np.ndarray | None) -> np.ndarray:
    """Float audio as its PCM; 16-bit PCM (decode's `pcm16`) as it is."""
    if audio is None:
        return _NO_AUDIO
    return audio if audio.dtype == np.int16 else scaled_pcm16(audio, 1 / PCM16_SCALE)


def pcm16_or_none(audio: np.ndarray | None) -> np.ndarray | None:
    return None if audio is None else to_pcm16(audio)


def from_pcm16(pcm: np.ndarray) -> np.ndarray | None:
    if not pcm.size:
        return None
    audio = pcm.astype(np.float32)
    audio *= np.float32(PCM16_SCALE)
    return audio


def to_row(work: RecordingWork, pcm_of: dict[int, np.ndarray] | None = None) -> dict:
    """The work as a row; `pcm_of` maps id(float audio) to the PCM it came from, for audio passed on unchanged."""
    def pcm(audio):
        known = None if audio is None or pcm_of is None else pcm_of.get(id(audio))
        return known if known is not None else to_pcm16(audio)

    # the record pickled by us: Ray Data would first try (and fail) to make an Arrow column of it
    return {"work": pickle.dumps(replace(work, audio=None, enhanced=None), protocol=pickle.HIGHEST_PROTOCOL),
            "audio": pcm(work.audio), "enhanced": pcm(work.enhanced)}


def from_row(work: bytes, audio: np.ndarray, enhanced: np.ndarray, as_pcm: bool = False) -> RecordingWork:
    """The work of a row, its audio float32 (or the 16-bit PCM itself with `as_pcm`: what pack encodes)."""
    convert = (lambda pcm: pcm if pcm.size else None) if as_pcm else from_pcm16
    return replace(pickle.loads(work), audio=convert(audio), enhanced=convert(enhanced))


def to_batch(works: list[RecordingWork], pcm_of: dict[int, np.ndarray] | None = None) -> dict:
    rows = [to_row(w, pcm_of) for w in works]
    return {name: [row[name] for row in rows] for name in ("work", "audio", "enhanced")}


class StageSetupError(RuntimeError):
    """A stage's actor could not start (its model, its device): one line naming the stage."""


class SchedulingError(RuntimeError):
    """The cluster cannot hold the job's pools, and did not grow to within the configured wait."""


def start_stage(name: str, make: Callable[[], Stage]) -> Stage:
    try:
        stage = make()
        stage.setup()
        return stage
    except Exception as e:  # surfaces in the driver through Ray's error chain; the job prints this line
        raise StageSetupError(f"stage {name} could not start on {os.uname().nodename}: "
                              f"{type(e).__name__}: {e}") from None


class _StageActor:
    """Ray Data actor: builds its stage and loads its model once, then processes batches of works."""

    def __init__(self, name: str, make: Callable[[], Stage]):
        self.stage = start_stage(name, make)

    def __call__(self, batch: dict) -> dict:
        works = [from_row(w, a, e) for w, a, e in zip(batch["work"], batch["audio"], batch["enhanced"])]
        # the input works stay referenced until to_batch is done, so these ids are theirs alone
        pcm_of = {id(signal): pcm for work, a, e in zip(works, batch["audio"], batch["enhanced"])
                  for signal, pcm in ((work.audio, a), (work.enhanced, e)) if signal is not None}
        return to_batch(run_stage(self.stage, works), pcm_of)


def init_ray(cfg: CurateConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet_ray_notices()
    # Job-submitted drivers attach to their cluster; local runs start an embedded Ray with the config's CPUs.
    ray.init(address=address or None, num_cpus=None if address else cfg.ray.local_num_cpus,
             include_dashboard=False if not address else None, log_to_driver=cfg.ray.log_to_driver,
             ignore_reinit_error=True, logging_level=logging.WARNING)


# Ray's warnings about what the job chose on purpose (message starts)
_ROUTINE_NOTICES = ("Progress bars disabled",  # no terminal: the driver prints progress lines instead
                    "Token authentication is enabled for this Ray cluster")  # a local instance's default


class _RoutineNotices(logging.Filter):
    def __init__(self, keep_info: tuple[str, ...] = ()):
        super().__init__()
        self.keep_info = keep_info

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.WARNING:
            return message.startswith(self.keep_info)
        return not message.startswith(_ROUTINE_NOTICES)


def quiet_ray_notices() -> None:
    """The driver's console keeps the job's own lines, Ray Data's execution plan (each operator named after its
    stage) and Ray's warnings and errors (an operator that uses more memory than its stage declares, a task
    that hangs). Ray Data's other INFO lines (each dataset's start and end) stay in the session's
    `logs/ray-data`, and the routine notices above are dropped."""
    import ray.data  # noqa: F401  (sets up its loggers on import)

    for name, keep_info in (("ray", ()), ("ray.data", ("Execution plan of Dataset",))):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
                continue  # Ray's session log files keep everything
            if not any(isinstance(f, _RoutineNotices) for f in handler.filters):
                handler.addFilter(_RoutineNotices(keep_info))


def wait_for_capacity(cfg: CurateConfig, say: Callable[[str], None] = print) -> None:
    """Return once the cluster's alive nodes can hold every pool; SchedulingError after
    `ray.schedule_timeout_s` without (an autoscaler may add nodes meanwhile)."""
    import ray

    demands = stage_demands(cfg)
    deadline = time.monotonic() + cfg.ray.schedule_timeout_s
    announced = False
    while True:
        problems = unschedulable(demands, cluster_nodes(ray.nodes()))
        if not problems:
            return
        if time.monotonic() >= deadline:
            raise SchedulingError("; ".join(problems) + f" (waited {cfg.ray.schedule_timeout_s:g} s for capacity)")
        if not announced:
            say(f"curate: waiting up to {cfg.ray.schedule_timeout_s:g} s for the cluster to hold the pools: "
                + "; ".join(problems))
            announced = True
        time.sleep(2)


def actor_pool(resources):
    """A fixed pool, or one Ray Data scales between [min, max] with the work queued for it."""
    import ray

    low, high = pool_bounds(resources.concurrency)
    if low == high:
        return ray.data.ActorPoolStrategy(size=low)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def declared_memory(resources) -> dict:
    """`memory=` for Ray when the stage declares `memory_mb`: the scheduler then never overcommits a node."""
    memory = memory_bytes(resources)
    return {"memory": memory} if memory else {}


def write(batch, settings: WriteSettings) -> dict:
    """Ray Data task (the operator `MapBatches(write)`): commits a batch of packed recordings to shards and
    returns their outcomes. A task, not an actor: it keeps nothing between batches, and runs in a worker that
    is already up."""
    # an Arrow batch: each recording is unpickled straight from the block's buffer in the object store, where
    # a numpy batch would first copy every value into a bytes object (the whole batch, hundreds of MB for long
    # sessions, into fresh memory)
    packed = [pickle.loads(value.as_buffer()) for chunk in batch.column("packed").chunks for value in chunk]
    outcomes = write_recordings(packed, settings)
    return {"outcome": [pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL) for o in outcomes]}


def curate_stream(cfg: CurateConfig, todo: Iterable[tuple[str, list[str]]], stages: list[StagePlan],
                  pipeline: PipelineInfo, write_settings: WriteSettings) -> Iterator[Optional[RecordingOutcome]]:
    """Outcomes of written recordings as they finish, for `todo` = [(source, recording ids to skip)], in
    any order (None while waiting: stream_works); the writers commit everything before their outcomes arrive."""
    decode_cfg, sample_rate, storage_options = cfg.decode, cfg.sample_rate, write_settings.storage_options

    # with no pool, only stages without a model run before pack (fixed windows: they read the length alone),
    # so a 16-bit file goes from its PCM to pack's without a float32 copy
    pcm16 = all(plan.in_task for plan in stages)

    def decode(item: dict) -> Iterator[RecordingWork]:
        source = os.fsdecode(item["source"])  # bytes across Ray: a file name need not be valid UTF-8
        yield from decode_sessions(source, decode_cfg, sample_rate, set(item["skip"]), storage_options, pcm16)

    items = [{"source": os.fsencode(source), "skip": list(skip)} for source, skip in todo]
    yield from stream_works(cfg, items, decode, stages, partial(pack_recording, pipeline=pipeline), write_settings)


def stream_works(cfg, items: list[dict], expand: Callable[[dict], Iterator[RecordingWork]], stages: list[StagePlan],
                 pack: Callable[[RecordingWork], object], write_settings: WriteSettings
                 ) -> Iterator[Optional[RecordingOutcome]]:
    """The streaming job of any input: each item `expand`s into works (tasks), the model stages run as actor
    pools, `pack` turns a finished work into a PackedRecording (tasks), the writers (tasks) commit. `cfg`
    holds `ray`, `resources` (decode, pack, write and the stages') and `pools()` (the curation config, or
    prepare_sft's).
    None every WAITING_TICK_SECONDS without an outcome (actors loading their models, a long recording), so
    that the driver can show the job is alive."""
    import ray

    if not items:
        return
    init_ray(cfg)
    wait_for_capacity(cfg)
    context = ray.data.DataContext.get_current()
    # bars on a terminal; elsewhere (logs, `ray job submit`) Ray Data would log a block per operator every 10 s,
    # and the driver prints its own progress lines instead
    context.enable_progress_bars = cfg.ray.progress_bars and sys.stdout.isatty()
    context.execution_options.preserve_order = False
    # Ray Data fills a block up to this size before it moves on; sessions are far bigger than a row of
    # ordinary data, so anything small makes each session travel alone and stream through the stages
    context.target_max_block_size = int(cfg.ray.target_max_block_mb * 2**20)

    in_task = list(takewhile(lambda plan: plan.in_task, stages))  # one after a model stage gets a pool
    pooled = stages[len(in_task):]

    def packed_row(work: RecordingWork) -> dict:
        # pickled here, once: a column of large Python objects makes Ray Data try Arrow first, then pickle
        return {"packed": pickle.dumps(pack(work), protocol=pickle.HIGHEST_PROTOCOL)}

    def pack_row(row: dict) -> dict:
        return packed_row(from_row(row["work"], row["audio"], row["enhanced"], as_pcm=True))

    # with no model stage left, the decode tasks pack too, sessions side by side on the CPUs a task holds
    pack_threads = 1 if pooled else task_threads(cfg.resources.decode.num_cpus)

    def decode(item: dict) -> Iterator[dict]:
        # a generator: each session leaves the task as its own block before the next one is decoded
        built = [start_stage(plan.name, plan.make) for plan in in_task]

        def finish(work: RecordingWork) -> dict:
            for stage in built:
                [work] = run_stage(stage, [work])
            # with no model stage left, pack here too, from 16-bit PCM as after the pools
            return to_row(work) if pooled else packed_row(replace(work, audio=pcm16_or_none(work.audio),
                                                                  enhanced=pcm16_or_none(work.enhanced)))

        yield from in_order(finish, expand(item), pack_threads)

    ds = ray.data.from_items(items, override_num_blocks=min(len(items), cfg.ray.input_blocks))
    decode_task = dict(num_cpus=cfg.resources.decode.num_cpus, **declared_memory(cfg.resources.decode))
    if pooled:
        ds = ds.flat_map(decode, **decode_task)
    else:
        # packed sessions leave as Arrow blocks made around their pickled bytes: as rows, Ray Data would first
        # copy each into an Arrow column (0.11 s per hour-long session here, on the task's serial path)
        ds = ds.map_batches(as_arrow_blocks(decode), batch_size=1, batch_format="pyarrow", **decode_task)
    for plan in pooled:
        r = plan.resources
        # a class per stage: Ray names the operator after it, so the plan and progress say `MapBatches(transcribe)`
        actor = type(plan.name, (_StageActor,), {"__module__": __name__, "__qualname__": plan.name})
        ds = ds.map_batches(actor, fn_constructor_args=(plan.name, plan.make), batch_size=r.batch_size,
                            batch_format="numpy", compute=actor_pool(r), num_cpus=r.num_cpus,
                            num_gpus=r.num_gpus or None, **declared_memory(r))
    if pooled:
        ds = ds.map(pack_row, num_cpus=cfg.resources.pack.num_cpus, **declared_memory(cfg.resources.pack))
    w = cfg.resources.write
    ds = ds.map_batches(write, fn_kwargs={"settings": write_settings}, batch_size=w.batch_size, batch_format="pyarrow",
                        compute=ray.data.TaskPoolStrategy(size=w.concurrency), num_cpus=w.num_cpus,
                        **declared_memory(w))
    for row in with_ticks(ds.iter_rows(), WAITING_TICK_SECONDS):
        yield None if row is None else pickle.loads(row["outcome"])


WAITING_TICK_SECONDS = 2.0


def as_arrow_blocks(rows_of: Callable[[dict], Iterator[dict]]) -> Callable:
    """A `map_batches` function from a `flat_map` one whose rows hold `bytes` only (packed sessions): each row
    becomes an Arrow block of its own around those bytes, with no copy. It keeps the name of `rows_of`, which
    Ray Data names the operator after."""
    import pyarrow as pa

    def blocks(batch: pa.Table) -> Iterator[pa.Table]:
        for item in batch.to_pylist():
            for row in rows_of(item):
                yield pa.table({name: _binary_column(value) for name, value in row.items()})

    blocks.__name__ = blocks.__qualname__ = rows_of.__name__
    return blocks


def _binary_column(value: bytes):
    """A one-value Arrow binary column whose data buffer is `value` itself."""
    import pyarrow as pa

    offsets = pa.py_buffer(np.array([0, len(value)], dtype=np.int64))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(value)])


def in_order(fn: Callable, items: Iterator, threads: int) -> Iterator:
    """fn(item) for each item, in order, computed on `threads` threads with at most that many under way (so
    at most that many items in memory besides the one being made); one thread: plainly, in this thread."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        under_way: deque = deque()
        for item in items:
            under_way.append(pool.submit(fn, item))
            if len(under_way) >= threads:
                yield under_way.popleft().result()
        while under_way:
            yield under_way.popleft().result()


def with_ticks(items: Iterator, every: float) -> Iterator:
    """`items`, driven by a thread of their own, with None whenever `every` seconds pass without one. An
    exception they raise is raised here. Ray is started before, in the main thread: `ray.init` installs its
    SIGTERM handler there only."""
    arrived: queue.Queue = queue.Queue()
    end = object()

    def drive() -> None:
        try:
            for item in items:
                arrived.put((item, None))
            arrived.put((end, None))
        except BaseException as e:  # noqa: BLE001 (handed over, raised in the consumer)
            arrived.put((end, e))

    threading.Thread(target=drive, name="outcomes", daemon=True).start()
    while True:
        try:
            item, error = arrived.get(timeout=every)
        except queue.Empty:
            yield None
            continue
        if error is not None:
            raise error
        if item is end:
            return
        yield item
