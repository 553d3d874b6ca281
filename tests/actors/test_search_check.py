"""Imagined one-step searches replayed in the real env (``rehearse eval-search``): the summary
against a plain loop, and the command on tiny trained-format checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actors.search_check import (
    group_signals,
    paired_comparison,
    paired_fidelity,
    search_agreement,
)
from cluster.cli import main


def _records(imagined_reward, imagined_success, real_success, explored):
    return [
        {
            "task": "lift_red" if i < 4 else "lift_yellow",
            "seed": i // 4,
            "group": i // 4,
            "k": 0,
            "imagined_reward": r,
            "imagined_success": s,
            "real_success": q,
            "explored": e,
        }
        for i, (r, s, q, e) in enumerate(
            zip(imagined_reward, imagined_success, real_success, explored, strict=True)
        )
    ]


def test_targets_are_the_learners_and_their_real_advantage_a_plain_loop():
    rng = np.random.default_rng(0)
    n, g = 4, 6
    reward = rng.uniform(0, 1, n * g).round(1)
    reward[:n] = 0.2  # one group of equal R: no reflector targets there
    success = reward > 0.6
    real = rng.uniform(size=n * g) > 0.5
    explored = rng.uniform(size=n * g) > 0.2
    recs = _records(reward.tolist(), success.tolist(), real.tolist(), explored.tolist())
    for r in recs:
        r["task"] = "lift_red"
    out = search_agreement(recs, n)
    per_group = {}
    kinds = (("reflector", reward), ("success", success.astype(float)), ("oracle", real * 1.0))
    for kind, value in kinds:
        advs, mixed, per_group[kind] = [], 0, np.zeros(g)
        for j in range(g):
            v, q = value[j * n : (j + 1) * n], real[j * n : (j + 1) * n].astype(float)
            if v.max() - v.min() <= 1e-6:
                continue
            mixed += 1
            for i in range(n):
                if v[i] - (v.sum() - v[i]) / (n - 1) > 0 and explored[j * n + i]:
                    advs.append(q[i] - (q.sum() - q[i]) / (n - 1))
                    per_group[kind][j] += advs[-1]
        t = out["targets"][kind]
        assert t["mixed_groups"] == mixed and t["targets"] == len(advs)
        assert t["real_advantage"] == pytest.approx(np.mean(advs))
        assert t["real_better"] == pytest.approx(np.mean(np.array(advs) > 0))
        assert t["signal_per_group"] == pytest.approx(np.sum(advs) / g)
    # the share of the oracle's signal, and its interval over resampled groups, by hand
    draws = np.random.default_rng(0).integers(0, g, size=(2000, g))
    for kind in ("reflector", "success"):
        t = out["targets"][kind]
        assert t["share_of_oracle"] == pytest.approx(
            per_group[kind].sum() / per_group["oracle"].sum()
        )
        means = [per_group[kind][d].mean() for d in draws]
        assert t["signal_per_group_ci95"] == pytest.approx(np.quantile(means, [0.025, 0.975]))
        lo, hi = t["share_of_oracle_ci95"]
        assert lo <= t["share_of_oracle"] <= hi
    assert out["targets"]["oracle"]["share_of_oracle"] == 1.0
    ex = explored
    assert out["base"] == pytest.approx(real[ex].mean())
    assert out["precision"] == pytest.approx(real[ex & success].mean())
    assert out["recall"] == pytest.approx(success[ex & real].mean())
    assert out["groups"] == g and out["rollouts"] == n * g
    with pytest.raises(ValueError, match="whole groups"):
        search_agreement(recs[:-1], n)


def test_no_imagined_success_leaves_precision_and_success_targets_empty():
    recs = _records([0.1, 0.2, 0.1, 0.3], [False] * 4, [True, False, True, False], [True] * 4)
    out = search_agreement(recs, 4)
    assert out["precision"] is None and out["recall"] == 0.0
    assert out["targets"]["oracle"]["targets"] == 2  # the two real successes
    assert out["targets"]["oracle"]["real_advantage"] == pytest.approx(2 / 3)
    assert out["targets"]["success"] == {
        "mixed_groups": 0,
        "targets": 0,
        "real_advantage": None,
        "real_better": None,
        "real_worse": None,
        "signal_per_group": 0.0,
        "share_of_oracle": 0.0,
        "signal_per_group_ci95": [0.0, 0.0],
        "share_of_oracle_ci95": [0.0, 0.0],
    }
    # R 0.2 and 0.3 above the others' means (0.17, 0.13): the noise the reflector's R imitates
    assert out["targets"]["reflector"]["targets"] == 2


def _argv(root, out, *extra):
    return [
        "eval-search",
        "--policy", str(root / "sft"),
        "--simulator", str(root / "sim"),
        "--reflector", str(root / "refl"),
        "--data", str(root / "demos"),
        "--set", "env.image_size=16",
        "--set", "rollout.group_size=3",
        "--set", "rollout.max_policy_steps=2",
        "--set", "rollout.execute_steps=2",
        "--set", "rollout.eta=0.5",
        "--out", str(out),
        "--no-progress",
        *extra,
    ]  # fmt: skip


def test_command_writes_the_summary_and_every_rollout(tiny_world, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(_argv(tiny_world, out, "--groups", "3", "--batch", "2")) == 0
    summary = json.loads((out / "search.json").read_text())
    records = json.loads((out / "rollouts.json").read_text())
    assert summary["groups"] == 3 and summary["rollouts"] == len(records) == 9
    assert [r["group"] for r in records] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert summary["eta"] == 0.5 and summary["max_policy_steps"] == 2
    for g in range(3):  # one step k per group, shared by its rollouts
        assert len({r["k"] for r in records if r["group"] == g}) == 1
    assert set(summary["targets"]) == {"reflector", "success", "oracle"}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["groups"] == 3
    # the same search again, compared group by group with the first: nothing differs
    again = tmp_path / "again"
    argv = _argv(tiny_world, again, "--groups", "3", "--batch", "2", "--against", str(out))
    assert main(argv) == 0
    against = json.loads((again / "search.json").read_text())["against"]
    assert against["run"] == str(out) and against["groups"] == 3
    for reward in ("reflector", "success"):
        assert against[reward]["difference"] == 0.0 and against[reward]["p_value"] == 1.0


def test_branching_from_the_real_env_starts_imagination_where_the_replay_stands_at_k(
    tiny_world, tmp_path
):
    """--branch real: the imagined groups start from the real mean-action episode at each
    group's step k (every frame so far as context, the proprio there), imagine the horizon's
    remaining steps, and the records come back in group order with the same k as a search
    imagined from the start (same --seed), so the two pair group by group."""
    import torch

    from actors.config import RolloutConfig
    from actors.rollout import act_in_chunks
    from actors.search_check import _real_trunks
    from actors.starts import RealStartSampler
    from actors.worlds import RealWorld
    from cluster.backends import EnvFactory, PolicyFactory
    from envs.config import EnvConfig

    policy = PolicyFactory(str(tiny_world / "sft"))().eval()
    real = RealWorld(EnvFactory(EnvConfig(image_size=16)))
    jobs = RealStartSampler(["lift_red", "place_red_on_blue"], seed=3).sample(2)
    rollout = RolloutConfig(group_size=2, max_policy_steps=3, execute_steps=2)
    (a, b) = _real_trunks(policy, real, jobs, ["t0", "t1"], 2, rollout)
    assert a.frames.shape == (5, 16, 16, 3) and a.start == 4  # 2 chunks of 2 steps, + reset
    mean = act_in_chunks(
        policy,
        real.group(jobs, 1, ["m0", "m1"]),
        max_policy_steps=3,
        execute_steps=2,
        deterministic=True,
    )
    for i, init in enumerate((a, b)):  # the mean action's real state at policy step 2
        assert np.array_equal(init.frames[-1], mean.images[i, 2])
        assert np.allclose(init.proprio, mean.proprio[i, 2])
        assert init.task_id == jobs[i].task
    real.close()
    with pytest.raises(ValueError, match="search branch"):
        from actors.search_check import replay_searches

        next(replay_searches(policy, None, real, jobs, [a, b], rollout,
                             generator=torch.Generator(), branch="middle"))  # fmt: skip

    start, branched = tmp_path / "start", tmp_path / "branched"
    assert main(_argv(tiny_world, start, "--groups", "4", "--batch", "2")) == 0
    argv = _argv(tiny_world, branched, "--groups", "4", "--batch", "2", "--branch", "real")
    assert main([*argv, "--against", str(start)]) == 0
    summary = json.loads((branched / "search.json").read_text())
    records = json.loads((branched / "rollouts.json").read_text())
    first = json.loads((start / "rollouts.json").read_text())
    assert summary["branch"] == "real" and summary["against"]["groups"] == 4
    assert [r["group"] for r in records] == [g for g in range(4) for _ in range(3)]
    assert [(r["task"], r["seed"], r["k"]) for r in records] == [
        (r["task"], r["seed"], r["k"]) for r in first
    ]
    # the real replay is the same in both: the chunks at k differ, the trunk before k does not
    assert all(r["explored"] or r["k"] > 0 for r in records)


def test_a_search_on_real_frames_is_judged_by_the_reflector_there(tiny_world, tmp_path):
    """--frames real: the search runs in the real env, ended and rewarded by the reflector on
    the real frames at its own eta (nothing calibrated), and pairs with an imagined search of
    the same --seed group by group."""
    start, real = tmp_path / "start", tmp_path / "real"
    cal = f"post_train.eta_calibration_data=[{tiny_world / 'calibrate'}]"
    assert main(_argv(tiny_world, start, "--groups", "3", "--batch", "2")) == 0
    argv = _argv(tiny_world, real, "--groups", "3", "--batch", "2", "--frames", "real")
    assert main([*argv, "--set", cal, "--against", str(start)]) == 0
    summary = json.loads((real / "search.json").read_text())
    records = json.loads((real / "rollouts.json").read_text())
    assert summary["frames"] == "real" and summary["eta"] == 0.5
    assert not (real / "eta_calibration.json").exists()
    rewards = np.array([r["imagined_reward"] for r in records])
    success = np.array([r["imagined_success"] for r in records])
    assert ((rewards >= 0) & (rewards <= 1)).all() and np.array_equal(success, rewards > 0.5)
    first = json.loads((start / "rollouts.json").read_text())
    assert [r["k"] for r in records] == [r["k"] for r in first]


def test_frame_agreement_is_a_plain_loop_over_the_masked_pixels():
    from actors.search_check import frame_agreement

    rng = np.random.default_rng(2)
    im, re, before = (
        rng.uniform(size=(4, 5, 5, 3)),
        rng.uniform(size=(4, 5, 5, 3)),
        rng.uniform(size=(5, 5, 3)),
    )
    mask = rng.uniform(size=(5, 5)) > 0.5
    pix = [(y, x) for y in range(5) for x in range(5) if mask[y, x]]
    err = np.mean([abs(im[i, y, x, c] - re[i, y, x, c]) for i in range(4) for y, x in pix
                   for c in range(3)])  # fmt: skip
    copy = np.mean([abs(before[y, x, c] - re[i, y, x, c]) for i in range(4) for y, x in pix
                    for c in range(3)])  # fmt: skip
    dot = na = nb = 0.0
    for y, x in pix:
        for c in range(3):
            ma, mb = im[:, y, x, c].mean(), re[:, y, x, c].mean()
            for i in range(4):
                dot += (im[i, y, x, c] - ma) * (re[i, y, x, c] - mb)
                na += (im[i, y, x, c] - ma) ** 2
                nb += (re[i, y, x, c] - mb) ** 2
    out = frame_agreement(im, re, before, mask)
    assert out["error"] == pytest.approx(err) and out["copy_error"] == pytest.approx(copy)
    assert out["cosine"] == pytest.approx(dot / np.sqrt(na * nb))
    assert out["real_spread"] == pytest.approx(np.sqrt(nb / (4 * len(pix) * 3)))
    assert out["imagined_spread"] == pytest.approx(np.sqrt(na / (4 * len(pix) * 3)))
    same = frame_agreement(re, re, before, mask)  # a world model that renders the real frames
    assert same["error"] == 0.0 and same["cosine"] == pytest.approx(1.0)


def test_chunk_fidelity_measures_the_searches_own_steps(tiny_world, tmp_path):
    out = tmp_path / "search"
    argv = _argv(tiny_world, out, "--groups", "4", "--batch", "2", "--chunk-fidelity")
    assert main(argv) == 0
    summary = json.loads((out / "search.json").read_text())
    per_group = json.loads((out / "chunk_fidelity.json").read_text())
    records = json.loads((out / "rollouts.json").read_text())
    k_of = {r["group"]: r["k"] for r in records}
    assert per_group and summary["chunk_fidelity"]["groups"] == len(per_group)
    assert [r["group"] for r in per_group] == sorted(r["group"] for r in per_group)
    for r in per_group:
        assert r["k"] == k_of[r["group"]] and r["pixels"] > 0
        assert 0 <= r["error"] <= 1 and 0 <= r["copy_error"] <= 1
        assert r["cosine"] is None or -1 - 1e-9 <= r["cosine"] <= 1 + 1e-9
    # the fidelity alone (no search, no eta) measures the same groups, chunks and frames, and
    # pairs with the first run's: nothing differs
    alone = tmp_path / "alone"
    argv = _argv(tiny_world, alone, "--groups", "4", "--batch", "2", "--fidelity-only")
    assert main([*argv, "--against", str(out), "--set", "rollout.eta=null"]) == 0
    assert json.loads((alone / "chunk_fidelity.json").read_text()) == per_group
    assert not (alone / "rollouts.json").exists() and not (alone / "eta_calibration.json").exists()
    summary = json.loads((alone / "search.json").read_text())
    assert set(summary["against"]) == {"run", "chunk_fidelity"}
    paired = summary["against"]["chunk_fidelity"]
    assert paired["groups"] == len(per_group)
    assert paired["error"]["difference"] == 0.0 and paired["error"]["p_value"] == 1.0


def _fidelity(errors, cosines, k=0):
    return [
        {"task": "lift_red", "group": g, "k": k, "pixels": 5, "copy_error": 0.01 * g,
         "error": e, "cosine": c}
        for g, (e, c) in enumerate(zip(errors, cosines, strict=True))
    ]  # fmt: skip


def test_paired_fidelity_is_the_per_group_difference_with_a_sign_flip_test():
    rng = np.random.default_rng(2)
    g = 10
    a_err, b_err = rng.uniform(0, 0.05, g), rng.uniform(0, 0.05, g)
    a_cos, b_cos = rng.uniform(-1, 1, g).tolist(), rng.uniform(-1, 1, g).tolist()
    a_cos[3] = None  # a group whose chunks do not differ in one world: left out of the cosine
    a, b = _fidelity(a_err.tolist(), a_cos), _fidelity(b_err.tolist(), b_cos)
    out = paired_fidelity(a, b[::-1])  # the order of the records does not matter
    signs = np.array([[1 - 2 * ((m >> j) & 1) for j in range(g)] for m in range(2**g)])
    d = a_err - b_err
    assert out["groups"] == g and out["error"]["groups"] == g
    assert out["error"]["difference"] == pytest.approx(d.mean())
    assert out["error"]["mean"] == pytest.approx(a_err.mean())
    exact = np.mean(np.abs(signs @ d) / g >= abs(d.mean()) - 1e-12)  # all 2^10 sign patterns
    assert out["error"]["p_value"] == pytest.approx(exact, abs=0.02)
    lo, hi = out["error"]["difference_ci95"]
    assert lo <= d.mean() <= hi
    kept = [i for i in range(g) if i != 3]
    dc = np.array([a_cos[i] - b_cos[i] for i in kept])
    assert out["cosine"]["groups"] == g - 1
    assert out["cosine"]["difference"] == pytest.approx(dc.mean())
    worse = _fidelity((b_err + 0.01).tolist(), b_cos)  # every group further from the real frame
    assert paired_fidelity(worse, b)["error"]["p_value"] < 0.01
    with pytest.raises(ValueError, match="same real frames"):
        paired_fidelity(a, _fidelity(b_err.tolist(), b_cos, k=1))
    with pytest.raises(ValueError, match="same real frames"):
        paired_fidelity(a, [dict(r, copy_error=r["copy_error"] + 0.1) for r in b])
    with pytest.raises(ValueError, match="same real frames"):
        paired_fidelity(a, b[:-1])


def test_paired_comparison_is_the_per_group_difference_with_a_sign_flip_test():
    rng = np.random.default_rng(1)
    n, g = 4, 12
    real = (rng.uniform(size=n * g) > 0.5).tolist()
    one = rng.uniform(0, 1, n * g).round(2)
    other = rng.uniform(0, 1, n * g).round(2)
    a = _records(one.tolist(), (one > 0.5).tolist(), real, [True] * (n * g))
    b = _records(other.tolist(), (other > 0.5).tolist(), real, [True] * (n * g))
    for recs in (a, b):
        for r in recs:
            r["task"], r["seed"] = "lift_red", r["group"]
    out = paired_comparison(a, b, n)
    sa, sb = group_signals(a, n), group_signals(b, n)
    assert np.allclose(sa["oracle"], sb["oracle"])  # the same real outcomes
    draws = np.random.default_rng(0).integers(0, g, size=(2000, g))
    for reward in ("reflector", "success"):
        d = sa[reward] - sb[reward]
        t = out[reward]
        assert t["difference"] == pytest.approx(d.mean())
        assert t["share_of_oracle"] == pytest.approx(d.sum() / sa["oracle"].sum())
        assert t["difference_ci95"] == pytest.approx(
            np.quantile([d[i].mean() for i in draws], [0.025, 0.975])
        )
        # by hand over every one of the 2^12 sign patterns (the test draws 10,000 of them)
        signs = np.array([[1 - 2 * ((m >> j) & 1) for j in range(g)] for m in range(2**g)])
        exact = np.mean(np.abs(signs @ d) / g >= abs(d.mean()) - 1e-12)
        assert t["p_value"] == pytest.approx(exact, abs=0.02)
    # a run whose every group carries more signal: the paired test says so
    best = [dict(r, imagined_reward=float(r["real_success"])) for r in a]
    out = paired_comparison(best, b, n)["reflector"]
    assert out["difference"] > 0 and out["p_value"] < 0.01
    with pytest.raises(ValueError, match="same real starts"):
        paired_comparison(a, b[:-n], n)
    with pytest.raises(ValueError, match="same real starts"):
        paired_comparison(a, [dict(r, seed=r["seed"] + 1) for r in b], n)
    with pytest.raises(ValueError, match="same step k"):
        paired_comparison(a, [dict(r, k=1) for r in b], n)


def test_command_calibrates_eta_for_imagined_frames_where_the_config_asks(tiny_world, tmp_path):
    out = tmp_path / "search"
    cal = f"post_train.eta_calibration_data=[{tiny_world / 'calibrate'}]"
    argv = _argv(tiny_world, out, "--groups", "2", "--set", cal)
    assert main([*argv, "--set", "rollout.eta=null"]) == 0
    summary = json.loads((out / "search.json").read_text())
    (rec,) = json.loads((out / "eta_calibration.json").read_text())["calibrations"]
    assert rec["when"] == "eval-search" and rec["max_steps"] == 4  # 2 chunks of 2 actions
    assert summary["eta"] == rec["eta"] and rec["simulator"] == str(tiny_world / "sim")
    other = tmp_path / "set"  # an eta set in the config wins: nothing calibrated
    assert main(_argv(tiny_world, other, "--groups", "2", "--set", cal)) == 0
    assert json.loads((other / "search.json").read_text())["eta"] == 0.5
    assert not (other / "eta_calibration.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--groups", "0"], "--groups must be >= 1"),
        (["--simulator", "/nonexistent/sim"], "/nonexistent/sim does not exist"),
        (["--against", "/nonexistent/run"], "no rollouts.json"),
        (["--frames", "real", "--branch", "real"], "no --branch real"),
        (["--fidelity-only", "--branch", "real"], "--fidelity-only runs no search"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(tiny_world, tmp_path, capsys, extra, message):
    out = tmp_path / "search"
    assert main([*_argv(tiny_world, out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_comparison_with_a_search_of_other_starts_is_refused_before_searching(
    tiny_world, tmp_path, capsys
):
    other = tmp_path / "other"
    other.mkdir()
    (other / "rollouts.json").write_text(
        json.dumps(_records([0.1] * 8, [False] * 8, [True] * 8, [True] * 8))
    )
    out = tmp_path / "search"
    assert main([*_argv(tiny_world, out, "--groups", "2"), "--against", str(other)]) == 2
    assert "searched other starts" in capsys.readouterr().err
    assert not out.exists()


def test_a_comparison_at_other_steps_or_without_fidelity_is_refused_before_measuring(
    tiny_world, tmp_path, capsys
):
    from actors.starts import RealStartSampler
    from envs.config import EnvConfig
    from envs.factory import task_names

    jobs = RealStartSampler(task_names(EnvConfig()), seed=0).sample(2)
    other = tmp_path / "other"
    other.mkdir()
    recs = _records([0.1] * 6, [False] * 6, [True] * 6, [True] * 6)
    for i, r in enumerate(recs):  # this run's starts, at a step k it does not draw (max 2)
        r.update(task=jobs[i // 3].task, seed=jobs[i // 3].seed, group=i // 3, k=5)
    (other / "rollouts.json").write_text(json.dumps(recs))
    out = tmp_path / "search"
    argv = _argv(tiny_world, out, "--groups", "2", "--against", str(other))
    assert main(argv) == 2
    assert "explored other steps k" in capsys.readouterr().err
    assert main([*argv, "--fidelity-only"]) == 2
    assert "no chunk_fidelity.json" in capsys.readouterr().err
    (other / "chunk_fidelity.json").write_text(json.dumps(_fidelity([0.1], [0.5], k=5)))
    assert main([*argv, "--fidelity-only"]) == 2
    assert "explored other steps k" in capsys.readouterr().err
    assert not out.exists()
