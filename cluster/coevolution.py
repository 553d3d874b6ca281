"""WoVR's world-model / policy co-evolution (PACE) inside a post-training run in imagination.

Every ``post_train.coevolve_every`` iterations the current policy collects a few real episodes
with its own Laplace samples (World-Env's self-exploration, now of the improved policy), the
world model is refined on them (plus ``post_train.coevolve_data``) for a short budget starting
from its current weights, and the simulator replicas restart with the refined checkpoint. The
run measures imagined-vs-real agreement before and after each refinement: on fixed real starts,
the share of each start's imagined rollouts that the reflector ends as a success beside the
real success of the same policy from the same start, and their correlation. The reflector
stays as it is (it has no warm start to refine from); where the run calibrates the reflector's
threshold for imagined frames (``post_train.eta_calibration_data``), it does so again on the
refined world model's frames.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.starts import COEVOLVE_SEED_OFFSET
from cluster.config import ExperimentConfig
from core.fsutil import write_text_atomic


def collect_policy_episodes(
    cfg: ExperimentConfig, policy: str | Path, out: Path, *, round_no: int, progress: bool
) -> dict[str, Any]:
    """Real episodes of the current policy (its sampled actions) into a new store at ``out``;
    seeds of round k start at ``COEVOLVE_SEED_OFFSET + seed + 10^6 k``."""
    from cluster.collect import collect, episode_specs
    from envs.factory import task_names

    specs = episode_specs(
        task_names(cfg.env),
        cfg.post_train.coevolve_episodes_per_task,
        seed=COEVOLVE_SEED_OFFSET + cfg.seed + 1_000_000 * round_no,
        source="exploration",
    )
    collect_cfg = dataclasses.replace(cfg.collect, steps_after_success=cfg.demo.steps_after_success)
    return collect(
        cfg.env, collect_cfg, specs, out, overwrite=True, progress=progress, policy_path=str(policy)
    )


def refine_world_model(
    checkpoint: str | Path,
    data: list[str],
    out: Path,
    *,
    budget_s: float,
    progress: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Continue training the world model of ``checkpoint`` on ``data`` for ``budget_s``
    seconds (its own config and optimizer state; the step count goes on); the refined
    checkpoint is ``out/checkpoint``. Returns the training summary."""
    from simulator_service.checkpoint import read_config, read_state
    from simulator_service.train import train_world_model

    cfg = read_config(checkpoint)
    step = int(read_state(checkpoint)["step"])
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, steps=step + 10**9, time_budget_s=budget_s)
    )
    if out.exists():  # an interrupted earlier attempt: start the refinement over
        shutil.rmtree(out)
    shutil.copytree(checkpoint, out / "checkpoint")
    return train_world_model(cfg, data, out, resume=True, progress=progress, log=log)


def coevolution_round(run: Any, it: int) -> dict[str, float]:
    """One round inside a post-training run (``cluster.driver.PostTrainRun``): agreement, the
    current policy's real episodes, the refined world model, restarted simulator replicas,
    agreement again; the round is appended to ``run_dir/coevolve.json``.

    Returns:
        ``coevolve/*`` metrics of the round.
    """
    import ray

    from cluster.placement import start_replicas
    from simulator_service.service import SimulatorService

    pt, k = run.cfg.post_train, run.coevolve_rounds + 1
    folder = run.run_dir / "coevolve" / f"round_{k:02d}"
    before = run.agreement()
    policy = run.export(folder / "policy")
    data = collect_policy_episodes(
        run.cfg, policy, folder / "data", round_no=k, progress=run.progress
    )
    stores = [str(folder / "data"), *pt.coevolve_data]
    run.log_line(f"co-evolution round {k}: refining the world model on {stores}")
    sim = refine_world_model(
        run.sim_path,
        stores,
        folder / "simulator",
        budget_s=pt.coevolve_simulator_s,
        progress=run.progress,
        log=run.log_line,
    )
    run.use_simulator(str(folder / "simulator" / "checkpoint"))
    if not run.world.colocated:  # colocated: each worker builds the refined model itself
        spec = next(s for s in run.world.services if s.prefix == "sim")
        for h in run.handles["sim"]:
            ray.kill(h)
        name = f"{run.cfg.name}-{time.time_ns() % 10**9}-sim-round{k}"
        run.handles["sim"] = start_replicas(
            SimulatorService, spec.replicas, spec.factory, name=name
        )
    run.calibrate_eta(f"co-evolution round {k}")  # the refined model's frames score anew
    run.set_world(run.world.make_world(run.handles))
    after = run.agreement()
    run.coevolve_rounds = k
    record = {
        "round": k,
        "iteration": it + 1,
        "episodes": data["episodes"],
        "policy_success": data["success_rate"],
        "simulator_steps": sim["steps"],
        "simulator": run.sim_path,
        "eta": run.world.rollout.eta,
        "before": before,
        "after": after,
    }
    path = run.run_dir / "coevolve.json"
    rounds = json.loads(path.read_text())["rounds"] if path.is_file() else []
    write_text_atomic(path, json.dumps({"rounds": [*rounds[: k - 1], record]}, indent=1))
    nan = float("nan")
    return {
        "coevolve/round": float(k),
        "coevolve/episodes": float(data["episodes"]),
        "coevolve/simulator_steps": float(sim["steps"]),
        **{
            f"coevolve/{when}_{key}": float(v[key]) if v[key] is not None else nan
            for when, v in (("before", before), ("after", after))
            for key in ("imagined_success", "real_success", "correlation")
        },
    }


__all__ = ["collect_policy_episodes", "refine_world_model", "coevolution_round"]
