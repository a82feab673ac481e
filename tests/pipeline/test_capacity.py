"""Sizing a node from per-stage costs: which resource and stage bound it, and pools that keep pace."""
import pytest

from pipeline.capacity import StageCost, balance_node, task_threads

# seconds per audio-hour of one actor, and what each actor holds (a made-up but plausible node)
COSTS = [StageCost("decode", 20, 1), StageCost("enhance", 60, 2, 1), StageCost("transcribe", 120, 2, 1),
         StageCost("quality", 300, 2), StageCost("write", 10, 1)]


def test_the_scarce_resource_and_its_largest_user_bound_the_node():
    gpu_node = balance_node(COSTS, cpus=128, gpus=8)
    # GPUs: 180 GPU-seconds per audio-hour -> 8 GPUs x 3600 / 180 = 160 audio-h/h; CPUs would allow 1 s more
    assert gpu_node.bound_by == "gpus" and gpu_node.bounding_stage == "transcribe"
    assert gpu_node.audio_hours_per_hour == pytest.approx(160.0)
    cpu_node = balance_node(COSTS, cpus=16, gpus=8)  # 990 core-s per audio-h: 16 x 3600 / 990 = 58.2
    assert cpu_node.bound_by == "cpus" and cpu_node.bounding_stage == "quality"
    assert cpu_node.audio_hours_per_hour == pytest.approx(16 * 3600 / 990)


def test_pools_keep_pace_and_fit_the_node():
    plan = balance_node(COSTS, cpus=128, gpus=8)
    # at 160 audio-h/h: transcribe keeps 5.33 actors busy, enhance 2.67, quality 13.3; whole actors that fit
    # the 8 GPUs: 5 + 3 (enhance is furthest behind at 2), quality 14 (CPUs are plenty), decode and write 1
    assert plan.pools == {"decode": 1, "enhance": 3, "transcribe": 5, "quality": 14, "write": 1}
    assert sum(plan.pools[c.stage] * c.gpus for c in COSTS) <= 8
    assert sum(plan.pools[c.stage] * c.cpus for c in COSTS) <= 128
    with pytest.raises(ValueError):
        balance_node([StageCost("idle", 0, 1)], cpus=1, gpus=0)


def test_pack_holds_cpus_only_where_it_runs_as_its_own_tasks():
    from jobs.cli import load_settings
    from pipeline.capacity import stage_demands
    from pipeline.config import CurateConfig

    def demanded(*overrides):
        cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["input=x", "output=y", *overrides])
        return {d.stage: d.cpus for d in stage_demands(cfg)}

    # model-free: windows and pack run in the decode tasks, so decode may hold all the writer leaves
    model_free = demanded("enhance.enabled=false", "diarize.backend=fixed", "transcribe.enabled=false",
                          "quality.enabled=false", "tokenize.enabled=false", "resources.decode.num_cpus=1.875")
    assert model_free == {"write": 0.125, "decode": 1.875}
    assert demanded()["pack"] == 0.125  # after the model pools, pack is a pool of tasks of its own


def test_a_task_or_actor_runs_one_thread_per_cpu_it_holds_to_the_nearest():
    # pack threads in a decode task and DNSMOS's onnxruntime threads follow the same rule
    assert [task_threads(c) for c in (0.125, 1, 1.5, 1.875, 2.5, 4)] == [1, 1, 2, 2, 3, 4]
