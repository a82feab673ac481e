import json
from dataclasses import asdict, dataclass, field
from typing import Optional

import pyarrow as pa
import pytest

from pipeline.shards import (
    AudioInfo, PipelineInfo, SchemaError, SegmentRecord, TokenInfo, Word, expected_token_count, recording_id_for,
    segment_key,
)
from pipeline.shards.manifest import MANIFEST_SCHEMA, manifest_row, manifest_schema, rows_to_table
from pipeline.shards.schema import column, is_valid_key


def make_record(**changes) -> SegmentRecord:
    base = dict(recording_id=recording_id_for("/a.wav"), source="/a.wav", segment_index=3, start=1.5, end=4.0,
                audio=AudioInfo(sample_rate=16000, num_samples=40000), pipeline=PipelineInfo("0.1.0", "abc"),
                text="hello there", language="en", words=(Word("hello", 1.5, 2.0, 0.9), Word("there", 2.1, 2.6)),
                tokens=TokenInfo(count=32, model="glm4"))
    return SegmentRecord(**{**base, **changes})


def test_record_round_trips_through_json():
    record = make_record()
    data = json.loads(json.dumps(record.to_dict()))
    assert SegmentRecord.from_dict(data) == record
    assert data["key"] == f"{record.recording_id}_000003"
    assert data["duration"] == pytest.approx(2.5)


def test_the_manifest_row_has_exactly_the_manifest_columns():
    row = manifest_row(make_record(), "shard-0", {"flac": "ab" * 32}, 1234)
    assert list(row) and set(row) == set(MANIFEST_SCHEMA.names)
    table = rows_to_table([row], MANIFEST_SCHEMA)
    assert table.column("token_count")[0].as_py() == 32 and table.column("num_words")[0].as_py() == 2
    assert table.column("asr_no_speech_prob")[0].as_py() is None


def test_a_field_added_to_the_record_class_reaches_json_the_checks_and_the_manifest():
    @dataclass(frozen=True, slots=True)
    class WithMood(SegmentRecord):  # the one place a new field is written
        mood: Optional[str] = field(default=None, metadata=column("string"))
        arousal: Optional[float] = field(default=None, metadata=column("float32", minimum=0.0, maximum=1.0))

    record = WithMood(**{f: getattr(make_record(), f) for f in asdict(make_record())}, mood="calm", arousal=0.25)
    data = json.loads(json.dumps(record.to_dict()))
    assert data["mood"] == "calm" and WithMood.from_dict(data) == record
    with pytest.raises(SchemaError) as err:
        WithMood.from_dict({**data, "arousal": 2.0})
    assert err.value.field == "arousal"
    schema = manifest_schema(WithMood)
    assert schema.field("mood").type == pa.string() and schema.field("arousal").type == pa.float32()
    row = manifest_row(record, "shard-0", {}, 10)
    assert set(row) == set(schema.names) and row["mood"] == "calm"
    assert rows_to_table([row], schema).column("arousal")[0].as_py() == 0.25


def test_records_are_immutable():
    with pytest.raises(AttributeError):
        make_record().text = "changed"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["audio"].pop("sample_rate"), "audio.sample_rate"),
    (lambda d: d.update(start=-1.0), "start"),
    (lambda d: d.update(language_prob="high"), "language_prob"),
    (lambda d: d["words"][1].update(end=0.5), "words[1].end"),
    (lambda d: d["quality"].update(speech_ratio=1.5), "quality.speech_ratio"),
    (lambda d: d["tokens"].update(count=-2), "tokens.count"),
    (lambda d: d.update(schema=2), "schema"),
    (lambda d: d.update(key="0000000000000000_000001"), "key"),
    (lambda d: d.update(recording_id="../etc"), "recording_id"),
    (lambda d: d.update(end=1.0), "end"),
])
def test_validation_names_the_bad_field(mutate, field):
    data = make_record().to_dict()
    mutate(data)
    with pytest.raises(SchemaError) as err:
        SegmentRecord.from_dict(data)
    assert err.value.field == field
    assert field in str(err.value)


def test_recording_ids_and_keys_are_stable_and_safe():
    assert recording_id_for("s3://bucket/a.flac") == recording_id_for("s3://bucket/a.flac")
    assert recording_id_for("a.flac") != recording_id_for("b.flac")
    session = recording_id_for("a.flac", session=2)
    assert session.endswith("-s0002")
    key = segment_key(session, 12)
    assert is_valid_key(key) and "." not in key and "/" not in key
    assert not is_valid_key("../../etc/passwd")


@pytest.mark.parametrize("seconds, tokens", [
    (0.08, 1),                 # 1280 samples: one token
    (29.99, 375),              # (479840 - 1) // 1280 + 1
    (30.0, 375),               # one full chunk
    (30.01, 376),              # a 160-sample second chunk still makes a token
    (95.0, 3 * 375 + 63),      # three chunks + 5 s: (80000 - 1) // 1280 + 1
])
def test_token_count_rule(seconds, tokens):
    assert expected_token_count(round(seconds * 16000), 16000) == tokens


def test_token_count_uses_16k_for_other_rates():
    assert expected_token_count(44100 * 30, 44100) == 375


def test_config_hash_is_stable():
    a = PipelineInfo.for_config("1", {"b": 1, "a": [1, 2]})
    assert a == PipelineInfo.for_config("1", {"a": [1, 2], "b": 1})
    assert a.config_hash != PipelineInfo.for_config("1", {"a": [1, 3], "b": 1}).config_hash
