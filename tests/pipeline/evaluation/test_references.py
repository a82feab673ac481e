"""Reference folders in the field's formats: RTTM, UEM, Kaldi text (with and without segments), STM, .txt."""
import pytest

from pipeline.evaluation.references import ReferenceError, SpeakerTurn, load_references, recording_name


def test_a_folder_of_rttm_uem_stm_and_kaldi_files(tmp_path):
    (tmp_path / "all.rttm").write_text(
        ";; comment\n"
        "SPEAKER meeting1 1 10.00 2.50 <NA> <NA> bob <NA> <NA>\n"
        "SPEAKER meeting1 1 0.00 4.00 <NA> <NA> alice <NA> <NA>\n"
        "SPKR-INFO meeting1 1 <NA> <NA> <NA> adult_male bob <NA> <NA>\n"
        "SPEAKER call2 1 1.5 1.0 <NA> <NA> A <NA> <NA>\n")
    (tmp_path / "all.uem").write_text("meeting1 1 0.0 12.0\nmeeting1 1 20.0 30.0\n")
    (tmp_path / "calls.stm").write_text(
        ";; STM\ncall2 A A 5.0 6.0 <o,f0,male> second part\ncall2 A A 1.5 2.5 first part\n"
        "call2 A A 7.0 8.0 ignore_time_segment_in_scoring\n")
    (tmp_path / "text").write_text("u2 is it\nu1 hello there\n")
    (tmp_path / "segments").write_text("u1 meeting1 0.0 4.0\nu2 meeting1 10.0 12.5\n")
    (tmp_path / "solo.txt").write_text("  just\nwords  \n")
    refs = load_references(str(tmp_path))
    assert set(refs) == {"meeting1", "call2", "solo"}
    assert refs["meeting1"].turns == [SpeakerTurn(0.0, 4.0, "alice"), SpeakerTurn(10.0, 12.5, "bob")]
    assert refs["meeting1"].uem == [(0.0, 12.0), (20.0, 30.0)]
    assert refs["meeting1"].text == "hello there is it"  # utterances in time order, by segments
    assert refs["call2"].text == "first part second part" and refs["call2"].has_speakers
    assert refs["solo"].text == "just words" and not refs["solo"].has_speakers and refs["solo"].uem is None


def test_kaldi_text_without_segments_names_recordings(tmp_path):
    (tmp_path / "text").write_text("rec-a one two\nrec-b three\n")
    refs = load_references(str(tmp_path))
    assert {name: r.text for name, r in refs.items()} == {"rec-a": "one two", "rec-b": "three"}


def test_bad_reference_files_name_the_file_and_line(tmp_path):
    with pytest.raises(ReferenceError, match="missing or empty"):
        load_references(str(tmp_path / "nowhere"))
    (tmp_path / "x.rttm").write_text("SPEAKER a 1 0 1 <NA> <NA> s <NA> <NA>\nSPEAKER a 1 2\n")
    with pytest.raises(ReferenceError, match=r"x.rttm:2: expected at least 8 fields"):
        load_references(str(tmp_path))


def test_recordings_are_named_by_file_name_without_extension():
    assert recording_name("/data/raw/ES2004a.Mix-Headset.wav") == "ES2004a.Mix-Headset"
    assert recording_name("s3://bucket/raw/call 2.flac") == "call 2"
    # AMI's audio carries the microphone after the meeting id its RTTM uses
    assert recording_name("/ami/ES2004a.Mix-Headset.wav", {"ES2004a", "ES2004b"}) == "ES2004a"
    assert recording_name("/ami/ES2004a.Mix-Headset.wav", {"ES2004a.Mix-Headset"}) == "ES2004a.Mix-Headset"
