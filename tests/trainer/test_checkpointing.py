"""Which checkpoint a restarted run picks: the newest complete one, never a half-written one."""
from trainer.checkpointing import latest_checkpoint


def complete(root, step):
    folder = root / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    (root / "checkpoints" / "latest").write_text(folder.name)
    return folder


def test_a_checkpoint_killed_while_saving_is_ignored(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    complete(tmp_path, 4)
    good = complete(tmp_path, 8)
    # killed mid-save: shards written under the partial name, never renamed, `latest` not moved
    partial = tmp_path / "checkpoints" / "step-00000012.partial"
    (partial / "weights").mkdir(parents=True)
    (partial / "weights" / "__0_0.distcp").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) == good


def test_latest_pointing_at_an_incomplete_folder_falls_back_to_the_newest_complete(tmp_path):
    good = complete(tmp_path, 4)
    (tmp_path / "checkpoints" / "step-00000008").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step-00000008")
    assert latest_checkpoint(tmp_path) == good
