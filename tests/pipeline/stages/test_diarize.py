"""The diarization stage on generated dialogs: real Silero VAD and real GE2E speaker embeddings."""
import re

import pytest
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from jobs.cli import load_settings
from pipeline.config import CurateConfig
from pipeline.stages.diarize import DiarizeStage
from pipeline.stages.work import RecordingWork
from pipeline.synthetic import make_dialog

LINES = [("alice", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("carol", "en-029", "Please call me when you arrive at the station tomorrow."),
         ("alice", "en-us+f4", "We measured the signal at three different frequencies."),
         ("carol", "en-029", "The weather will be cold and windy tomorrow morning.")]


@pytest.fixture(scope="module")
def dialog():
    return make_dialog(LINES, seed=3, noise_level=0.002)


def diarize(dialog, *overrides):
    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["output=x", *overrides])
    stage = DiarizeStage(cfg.diarize, 16000)
    stage.setup()
    return cfg, stage.process(RecordingWork(source="x.wav", recording_id="0123456789abcdef", audio=dialog.audio))


def test_embedding_backend_finds_the_speakers(dialog):
    cfg, out = diarize(dialog)
    kept = [s for s in out.segments if s.rejection is None]
    reference, hypothesis = Annotation(), Annotation()
    for t in dialog.turns:
        reference[Segment(t.start, t.end)] = t.speaker
    for s in kept:
        hypothesis[Segment(s.start, s.end)] = s.speaker
    der = DiarizationErrorRate(collar=0.25)(reference, hypothesis)
    print(f"DER {der:.3f} with {len({s.speaker for s in kept})} speakers")
    assert len({s.speaker for s in kept}) >= 2
    assert der < 0.5
    assert all(s.duration <= cfg.diarize.max_segment_seconds for s in out.segments)
    assert [s.start for s in out.segments] == sorted(s.start for s in out.segments)


def test_vad_backend_labels_one_speaker_and_merges_turns(dialog):
    cfg, out = diarize(dialog, "diarize.backend=vad")
    assert {s.speaker for s in out.segments} == {"S0"}
    # 4 turns with pauses under 2 s and ~12 s in all: merged into one segment
    assert len(out.segments) == 1
    assert out.segments[0].start <= dialog.turns[0].start and out.segments[0].end >= dialog.turns[-1].end - 0.1


def test_each_post_processing_rule_can_be_switched_off(dialog):
    _, merged = diarize(dialog, "diarize.backend=vad")
    _, unmerged = diarize(dialog, "diarize.backend=vad", "diarize.segment_merging=false")
    assert len(merged.segments) == 1 and len(unmerged.segments) >= 4  # one per VAD region, pauses kept
    _, full = diarize(dialog)
    _, no_rules = diarize(dialog, "diarize.cluster_merging=false", "diarize.chunk_reassignment=false")
    # average-linkage clusters kept as they are: at least as many speakers as after merging them
    assert len({s.speaker for s in no_rules.segments}) >= len({s.speaker for s in full.segments})
    enhanced = RecordingWork(source="x.wav", recording_id="0123456789abcdef", audio=dialog.audio,
                             enhanced=0 * dialog.audio)
    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["output=x", "diarize.audio=enhanced"])
    stage = DiarizeStage(cfg.diarize, 16000)
    stage.setup()
    assert stage.process(enhanced).rejection.reason == "no_speech"  # it heard the (silent) enhanced copy


def test_silence_is_rejected_whole():
    import numpy as np

    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["output=x"])
    stage = DiarizeStage(cfg.diarize, 16000)
    stage.setup()
    out = stage.process(RecordingWork(source="s.wav", recording_id="0123456789abcdef",
                                      audio=np.zeros(48000, dtype=np.float32)))
    assert out.rejection is not None and out.rejection.reason == "no_speech" and out.audio is None


@pytest.fixture(scope="module")
def pyannote_folder(tmp_path_factory):
    from jobs.build_models import build_pyannote_tiny

    return build_pyannote_tiny(tmp_path_factory.mktemp("models"))


def test_pyannote_folder_has_the_hub_layout(pyannote_folder):
    for member in ("config.yaml", "segmentation/pytorch_model.bin", "embedding/pytorch_model.bin",
                   "plda/xvec_transform.npz", "plda/plda.npz"):
        assert (pyannote_folder / member).is_file(), member


def test_pyannote_backend_runs_the_real_pipeline_and_the_report_chain(dialog, pyannote_folder):
    """Random weights give meaningless speakers; what is checked is the plumbing and the invariants."""
    cfg, out = diarize(dialog, "diarize.backend=pyannote", f"diarize.pyannote.pipeline={pyannote_folder}")
    assert out.failure is None and out.rejection is None and out.segments
    speakers = [s.speaker for s in out.segments]
    assert all(re.fullmatch(r"S\d+", s) for s in speakers)
    assert speakers[0] == "S0"  # renamed in order of first appearance
    assert all(s.duration <= cfg.diarize.max_segment_seconds for s in out.segments)
    assert all(0.0 <= s.start < s.end <= dialog.seconds + 1e-6 for s in out.segments)
    starts = [s.start for s in out.segments]
    assert starts == sorted(starts)
