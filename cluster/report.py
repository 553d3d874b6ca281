"""The demo's report: real-env success of the SFT and post-trained policies, side by side.

The post-trained policies: LOOP in imagination (the method) and, when the demo ran it, the
same LOOP in the real env with its ground-truth reward (the oracle).

Both policies are evaluated on the same seeds, so beside each success rate and its 95% Wilson
interval the report gives the paired comparison: episodes only one of the two solved, and the
exact two-sided sign-test p-value on those (McNemar's exact test).
"""

from __future__ import annotations

import math
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
        lines.append(
            f"Training rollouts (sampled actions, different starts each iteration): mean reward "
            f"{rewards[0]:.3f} in the first iteration, {rewards[-1]:.3f} in the last "
            f"({len(rewards)} iterations)."
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
    return [*lines, ""] if lines else []


POST_TRAINED = {
    "post_trained": "post-trained (LOOP in imagination)",
    "post_trained_real": "post-trained (LOOP in the real env, ground-truth reward: oracle)",
}


def demo_report(
    results: dict[str, dict[str, Any]],
    metrics: list[dict[str, Any]],
    *,
    seconds: float,
    real_metrics: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the report (markdown + numbers) from the stages' results and the post-training
    metrics of the imagined run (and of the real-env run, when there is one)."""
    ev = results["evaluate"]
    sft = ev["sft"]
    posts = {k: ev[k] for k in POST_TRAINED if k in ev}
    expert = results["collect"]["demos"]["success_rate"]
    modes = ("ground_truth", "reflector")
    rows = [("scripted expert (demo collection)", f"{100 * expert:.1f}%", "-")]
    for name, r in (("SFT (5 demos/task)", sft), *((POST_TRAINED[k], v) for k, v in posts.items())):
        rows.append((name, _rate(r["ground_truth"]), _rate(r["reflector"])))
    comp = {k: {m: paired(sft[m], v[m]) for m in modes} for k, v in posts.items()}
    imagined = [m.get("rollout/success") for m in metrics]
    rewards = [m.get("rollout/reward_mean") for m in metrics]
    lines = [
        "# rehearse demo report",
        "",
        f"Real-env success on the same {sft['ground_truth']['episodes']} episodes (seeds) per "
        "policy, with 95% Wilson intervals:",
        "",
        "| policy | success, env termination | success, reflector termination |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Paired with SFT on the same seeds (episodes solved by only one of the two; exact sign "
        "test):",
        "",
    ]
    for k, c in comp.items():
        lines += [
            f"- {POST_TRAINED[k]}, {m}: SFT only {x['only_first']}, post-trained only "
            f"{x['only_second']}, p = {x['p_value']:.3f}"
            for m, x in c.items()
        ]
    lines.append("")
    imagined_eval = results["post_train"].get("imagined_eval") or {}
    lines += _imagined_lines(imagined_eval, rewards)
    if real_metrics:
        real = [m["rollout/success"] for m in real_metrics]
        half = max(1, len(real) // 2)
        lines += [
            f"Real-env LOOP's training rollouts (sampled actions, fresh starts each iteration): "
            f"success {100 * sum(real[:half]) / half:.1f}% over the first {half} iterations, "
            f"{100 * sum(real[-half:]) / half:.1f}% over the last {half}.",
            "",
        ]
    timed = {k: v["seconds"] for k, v in results.items() if "seconds" in v}
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in timed.items())
    lines += [
        f"Stage times: {timing}; total {sum(timed.values()):.0f} s (this invocation "
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
        "imagined_eval": {k: v["success_rate"] for k, v in imagined_eval.items()},
        "reward_mean": rewards,
    }
