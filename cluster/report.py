"""The demo's report: real-env success of the SFT and post-trained policies, side by side.

The post-trained policies: LOOP in imagination (the method) and, when the demo ran them,
post-training in the real env with its ground-truth reward (the oracle) and its control,
continued SFT on the demos alone for the oracle's optimizer steps.

Both policies are evaluated on the same seeds, so beside each success rate and its 95% Wilson
interval the report gives the paired comparison: episodes only one of the two solved, and the
exact two-sided sign-test p-value on those (McNemar's exact test).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def sign_test_p(b: int, c: int) -> float:
    """Two-sided exact binomial p-value of b successes in b + c fair coin flips."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Episodes solved by only ``a`` / only ``b`` (same tasks and seeds) and the p-value."""
    sa = {(t, s): ok for t, s, ok in a["outcomes"]}
    sb = {(t, s): ok for t, s, ok in b["outcomes"]}
    common = sorted(set(sa) & set(sb))
    only_a = sum(sa[k] and not sb[k] for k in common)
    only_b = sum(sb[k] and not sa[k] for k in common)
    return {
        "episodes": len(common),
        "only_first": only_a,
        "only_second": only_b,
        "p_value": sign_test_p(only_a, only_b),
    }


def _rate(s: dict[str, Any]) -> str:
    return f"{100 * s['success_rate']:.1f}% [{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]"


def _imagined_lines(ev: dict[str, Any], rewards: list[Any]) -> list[str]:
    """The imagined side of the comparison: the same fixed starts before and after LOOP."""
    lines = []
    if rewards:
        half = max(1, len(rewards) // 2)
        lines.append(
            f"Training rollouts (sampled actions, different starts each iteration): mean reward "
            f"{sum(rewards[:half]) / half:.3f} over the first {half} iterations, "
            f"{sum(rewards[-half:]) / half:.3f} over the last {half} "
            f"(per iteration {min(rewards):.3f}-{max(rewards):.3f})."
        )
    if "before" in ev and "after" in ev:
        b, a = ev["before"], ev["after"]
        fb = [x[1] for x in b["per_start"]]
        fa = [x[1] for x in a["per_start"]]
        up = sum(y > x for x, y in zip(fb, fa, strict=True))
        down = sum(y < x for x, y in zip(fb, fa, strict=True))
        lines.append(
            f"Imagined success (reflector R > eta inside the world model, mean actions as in the "
            f"real evaluation, the same {b['starts']} real starts x "
            f"{b['rollouts'] // max(1, b['starts'])} rollouts): SFT "
            f"{100 * b['success_rate']:.1f}%, post-trained {100 * a['success_rate']:.1f}% "
            f"(starts where it rose {up}, fell {down})."
        )
    for when, label in (("agreement_before", "SFT"), ("agreement_after", "post-trained")):
        a = ev.get(when)
        if a:
            c = "n/a" if a["correlation"] is None else f"{a['correlation']:.2f}"
            lines.append(
                f"Imagined vs real, {label} policy, the same {a['starts']} real starts (mean "
                f"actions; imagination from each start's first real frame): imagined "
                f"{100 * a['imagined_success']:.1f}%, real {100 * a['real_success']:.1f}%, "
                f"per-start correlation {c}, outcome agreement {100 * a['agree']:.0f}%."
            )
    return [*lines, ""] if lines else []


def _start_lines(results: dict[str, Any], sft: dict[str, Any], posts: dict[str, Any]) -> list[str]:
    """Where the SFT started (vision pretraining) and how the policies fail (near misses)."""
    lines = []
    pre = results.get("pretrain") or {}
    if "error_cm" in pre:
        lines.append(
            f"The SFT started from vision towers pretrained to locate the objects and the "
            f"gripper in random scenes of another layout (`rehearse pretrain`): held-out error "
            f"{pre['error_cm']:.2f} cm per coordinate, {pre['layout_error_cm']:.2f} cm from the "
            "layout alone."
        )
    near = [
        f"{name} {r['ground_truth']['near_misses']} of {r['ground_truth']['failures']}"
        for name, r in (("SFT", sft), *((POST_TRAINED[k], v) for k, v in posts.items()))
        if "near_misses" in r["ground_truth"]
    ]
    if near:
        lines.append(
            "Near misses (failed episodes, mean action, that held the task's own block at some "
            f"step): {'; '.join(near)}."
        )
    return [*lines, ""] if lines else []


POST_TRAINED = {
    "post_trained": "post-trained (LOOP in imagination)",
    "post_trained_real": "post-trained in the real env (ground-truth reward: oracle)",
    "sft_control": "continued SFT on the demos alone (the oracle's optimizer steps, no reward)",
}


def _curve_lines(run_dir: Path | None, names: dict[str, str]) -> list[str]:
    """The learning curves of the post-training runs (``cluster/curve.py``), when logged."""
    from cluster.curve import CURVE_FILE, curve_points
    from cluster.metrics import read_metrics

    lines = []
    for folder, label in names.items():
        pts = curve_points(read_metrics(run_dir / folder)) if run_dir else []
        if not pts:
            continue
        seq = ", ".join(
            f"{p['episodes']:.0f}: {100 * p['mean_action']:.0f}% / {100 * p['sampled']:.0f}%"
            for p in pts
        )
        lines.append(
            f"- {label}: real success (mean action / sampled) at training episodes {seq} "
            f"(`{folder}/{CURVE_FILE}`)"
        )
    if lines:
        lines = [
            "Learning curves (real env, the curve's own fixed starts, never the evaluation's):",
            "",
            *lines,
            "",
        ]
    return lines


def _eta_lines(run_dir: Path | None) -> list[str]:
    """The eta imagination acted with, chosen on imagined replays of held-out episodes."""
    path = run_dir / "post_train" / "eta_calibration.json" if run_dir else None
    if path is None or not path.is_file():
        return []
    lines = ["The reflector's threshold in imagination (`post_train.eta_calibration_data`):", ""]
    for c in json.loads(path.read_text())["calibrations"]:
        if "skipped" in c:
            lines.append(f"- {c['when']}: eta {c['eta']} (the reflector's; {c['skipped']})")
            continue
        missed = "n/a" if c["missed_rate"] is None else f"{100 * c['missed_rate']:.0f}%"
        lines.append(
            f"- {c['when']}: eta {c['eta']} (on real frames {c['real_eta']}), chosen on "
            f"{c['episodes']} held-out episodes replayed through the world model "
            f"({c['failed_episodes']} failed): misses {missed} of the successes, stops "
            f"{100 * c['false_stop_rate']:.0f}% of the episodes before a real success"
        )
    return [*lines, ""]


def _coevolve_lines(run_dir: Path | None) -> list[str]:
    """Imagined vs real agreement before and after each co-evolution round."""
    path = run_dir / "post_train" / "coevolve.json" if run_dir else None
    if path is None or not path.is_file():
        return []
    lines = [
        "Co-evolution (imagined vs real success of the current policy on the same starts):",
        "",
    ]
    for r in json.loads(path.read_text())["rounds"]:
        b, a = r["before"], r["after"]

        def fmt(x: dict[str, Any]) -> str:
            c = "n/a" if x["correlation"] is None else f"{x['correlation']:.2f}"
            return (
                f"{100 * x['imagined_success']:.0f}% vs {100 * x['real_success']:.0f}% "
                f"(correlation {c})"
            )

        lines.append(
            f"- round {r['round']} after iteration {r['iteration']}: {r['episodes']} real "
            f"episodes of the policy, world model to step {r['simulator_steps']}; before "
            f"{fmt(b)}, after {fmt(a)}"
        )
    return [*lines, ""]


def demo_report(
    results: dict[str, dict[str, Any]],
    metrics: list[dict[str, Any]],
    *,
    seconds: float,
    real_metrics: list[dict[str, Any]] | None = None,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Build the report (markdown + numbers) from the stages' results and the post-training
    metrics of the imagined run (and of the real-env run, when there is one)."""
    ev = results["evaluate"]
    sft = ev["sft"]
    posts = {k: ev[k] for k in POST_TRAINED if k in ev}
    expert = results["collect"]["demos"]["success_rate"]
    modes = ("ground_truth", "sampled", "reflector")
    rows = [("scripted expert (demo collection)", f"{100 * expert:.1f}%", "-", "-")]
    for name, r in (("SFT (5 demos/task)", sft), *((POST_TRAINED[k], v) for k, v in posts.items())):
        rows.append((name, _rate(r["ground_truth"]), _rate(r["sampled"]), _rate(r["reflector"])))
    comp = {k: {m: paired(sft[m], v[m]) for m in modes} for k, v in posts.items()}
    iters = [m for m in metrics if "rollout/success" in m]  # not the curve's iteration-0 row
    imagined = [m["rollout/success"] for m in iters]
    rewards = [m["rollout/reward_mean"] for m in iters]
    lines = [
        "# rehearse demo report",
        "",
        f"Real-env success on the same {sft['ground_truth']['episodes']} episodes (seeds) per "
        "policy, with 95% Wilson intervals:",
        "",
        "| policy | mean action, env termination | sampled actions, env termination | mean "
        "action, reflector termination |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "Paired with SFT on the same seeds (episodes solved by only one of the two; exact sign "
        "test):",
        "",
    ]
    for k, c in comp.items():
        lines += [
            f"- {POST_TRAINED[k]}, {m}: SFT only {x['only_first']}, this policy only "
            f"{x['only_second']}, p = {x['p_value']:.3f}"
            for m, x in c.items()
        ]
    if "post_trained_real" in posts and "sft_control" in posts:
        x = paired(posts["sft_control"]["ground_truth"], posts["post_trained_real"]["ground_truth"])
        comp["oracle_vs_sft_control"] = {"ground_truth": x}
        lines.append(
            f"- the oracle against continued SFT (what the search adds beyond supervision), mean "
            f"action: continued SFT only {x['only_first']}, oracle only {x['only_second']}, "
            f"p = {x['p_value']:.3f}"
        )
    lines.append("")
    lines += _start_lines(results, sft, posts)
    imagined_eval = results["post_train"].get("imagined_eval") or {}
    lines += _imagined_lines(imagined_eval, rewards)
    gif = Path("post_train") / "videos" / "imagined_vs_real.gif"
    if run_dir is not None and (run_dir / gif).is_file():
        lines += [
            "The first of those starts, imagined and real, SFT and post-trained side by side:",
            "",
            f"![imagined vs real]({gif.as_posix()})",
            "",
        ]
    lines += _curve_lines(
        run_dir, {"post_train": "LOOP in imagination", "post_train_real": "the oracle (real env)"}
    )
    lines += _eta_lines(run_dir)
    lines += _coevolve_lines(run_dir)
    if real_metrics:
        real = [m["rollout/success"] for m in real_metrics if "rollout/success" in m]
        half = max(1, len(real) // 2)
        lines += [
            f"The oracle's training rollouts (sampled actions, fresh starts each iteration): "
            f"success {100 * sum(real[:half]) / half:.1f}% over the first {half} iterations, "
            f"{100 * sum(real[-half:]) / half:.1f}% over the last {half}.",
            "",
        ]
    timed = {k: v["seconds"] for k, v in results.items() if "seconds" in v}
    timing = ", ".join(
        f"{k} {v:.0f} s" + (f" (beside {results[k]['beside']})" if "beside" in results[k] else "")
        for k, v in timed.items()
    )
    # a stage that ran beside another took none of the run's wall time of its own
    total = sum(v for k, v in timed.items() if "beside" not in results[k])
    lines += [
        f"Stage times: {timing}; total {total:.0f} s (this invocation "
        f"{seconds:.0f} s; stages finished earlier are not rerun).",
        "",
    ]
    return {
        "markdown": "\n".join(lines),
        "expert_success": expert,
        **{
            k: {m: {f: r[m][f] for f in ("success_rate", "ci95", "episodes")} for m in modes}
            for k, r in (("sft", sft), *posts.items())
        },
        "paired": comp,
        "imagined_success": imagined,
        "imagined_eval": {
            k: v["success_rate"] for k, v in imagined_eval.items() if k in ("before", "after")
        },
        "agreement": {k: v for k, v in imagined_eval.items() if k.startswith("agreement")},
        "reward_mean": rewards,
    }
