"""Episode store: Parquet round trip, atomic writes, clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trajectories.dataset import WindowDataset
from trajectories.episode import Episode
from trajectories.store import EpisodeStore, StoreBuilder, write_episodes

META = {"env": {"name": "tabletop"}, "image_size": 16}


def make_episode(
    eid: str, steps: int = 5, *, size: int = 16, wrist: bool = False, seed: int = 0
) -> Episode:
    rng = np.random.default_rng(seed)
    n = steps + 1
    success = np.zeros(n, dtype=bool)
    success[-2:] = True
    return Episode(
        episode_id=eid,
        task_id="place_red_on_blue",
        instruction="put the red block on the blue plate",
        images=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
        wrist_images=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        if wrist
        else None,
        proprio=rng.normal(size=(n, 8)).astype(np.float32),
        actions=np.concatenate([rng.uniform(-1, 1, size=(steps, 7)), np.zeros((1, 7))]).astype(
            np.float32
        ),
        success=success,
        source="exploration",
        policy_version=3,
    )


def test_round_trip(tmp_path):
    eps = [make_episode("a", 4, seed=1), make_episode("b", 7, wrist=True, seed=2)]
    write_episodes(tmp_path / "store", eps, META)
    store = EpisodeStore(tmp_path / "store")
    assert store.meta == META
    assert store.episode_ids == ["a", "b"]
    assert [e["length"] for e in store.episode_info] == [4, 7]
    for ep in eps:
        got = store.load_episode(ep.episode_id)
        np.testing.assert_array_equal(got.images, ep.images)
        np.testing.assert_array_equal(got.proprio, ep.proprio)
        np.testing.assert_array_equal(got.actions, ep.actions)
        np.testing.assert_array_equal(got.success, ep.success)
        np.testing.assert_array_equal(got.done, ep.done)
        assert got.done[-1] and not got.done[:-1].any()
        assert (got.source, got.policy_version, got.instruction) == (
            "exploration",
            3,
            ep.instruction,
        )
        if ep.wrist_images is None:
            assert got.wrist_images is None
        else:
            np.testing.assert_array_equal(got.wrist_images, ep.wrist_images)


def test_existing_folder_refused_unless_overwrite(tmp_path):
    write_episodes(tmp_path / "s", [make_episode("a")], META)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_episodes(tmp_path / "s", [make_episode("b")], META)
    write_episodes(tmp_path / "s", [make_episode("b")], META, overwrite=True)
    assert EpisodeStore(tmp_path / "s").episode_ids == ["b"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreBuilder(tmp_path / "s", META) as b:
            b.add([make_episode("a")])
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_store(tmp_path):
    write_episodes(tmp_path / "s", [make_episode("a")], META)
    with pytest.raises(RuntimeError):
        with StoreBuilder(tmp_path / "s", META, overwrite=True) as b:
            b.add([make_episode("b")])
            raise RuntimeError("interrupted")
    assert EpisodeStore(tmp_path / "s").episode_ids == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_truncated_file_names_the_file(tmp_path):
    write_episodes(tmp_path / "s", [make_episode("a", 20)], META)
    part = next((tmp_path / "s").glob("*.parquet"))
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=part.name):
        EpisodeStore(tmp_path / "s")


def test_garbage_file_names_the_file(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "part-0.parquet").write_bytes(b"not parquet at all" * 10)
    with pytest.raises(ValueError, match="part-0.parquet"):
        EpisodeStore(tmp_path / "s")


def test_foreign_parquet_file_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "s" / "foreign.parquet")
    with pytest.raises(ValueError, match="foreign.parquet.*missing column"):
        EpisodeStore(tmp_path / "s")


def test_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EpisodeStore(tmp_path / "nope")


def test_bad_episode_shapes():
    ep = make_episode("a")
    with pytest.raises(ValueError, match="proprio must have shape"):
        Episode(
            episode_id="x",
            task_id="t",
            instruction="i",
            images=ep.images,
            proprio=ep.proprio[:-1],
            actions=ep.actions,
            success=ep.success,
        )
    with pytest.raises(ValueError, match="source must be one of"):
        Episode(
            episode_id="x",
            task_id="t",
            instruction="i",
            images=ep.images,
            proprio=ep.proprio,
            actions=ep.actions,
            success=ep.success,
            source="human",
        )


def test_window_dataset(tmp_path):
    write_episodes(
        tmp_path / "s", [make_episode("a", 4, seed=1), make_episode("b", 2, seed=2)], META
    )
    store = EpisodeStore(tmp_path / "s")
    ds = WindowDataset(store, window=3)
    # rows: a has 5 -> 3 windows, b has 3 -> 1 window
    assert len(ds) == 4
    item = ds[1]
    ep = store.load_episode("a")
    np.testing.assert_array_equal(item["images"].numpy(), ep.images[1:4])
    np.testing.assert_array_equal(item["actions"].numpy(), ep.actions[1:4])
    assert item["valid"].all()
    padded = WindowDataset(store, window=3, pad_end=True)
    assert len(padded) == 5 + 3
    last = padded[4]  # episode a, start 4: one real row, then repeats of the terminal row
    assert last["valid"].tolist() == [True, False, False]
    np.testing.assert_array_equal(last["images"][2].numpy(), ep.images[4])
    assert len(WindowDataset(store, window=3, sources=["expert"])) == 0
