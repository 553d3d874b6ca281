"""The reflector's termination threshold for imagined frames.

The reflector's eta is calibrated on real frames, where a success's R climbs high; on a world
model's frames the same success scores lower (a blurrier gripper, a fainter lift), so at the
real-frame eta imagination registers few of the successes it produces and an imagined search
keeps little of what the oracle would. This calibrates eta the way the reflector's own
calibration does (``reflector_service.metrics.calibrate_termination``: the eta that misses the
fewest successes within a limit on false stops), but on imagined replays: held-out real
episodes replayed open loop through the world model with their recorded actions, each labeled
frame by frame with its real success. What the limit bounds is every stop before a real
success, a failure's or a success's too early one (on a world model's frames a success can look
done before it is; either one rewards a rollout for a success it has not had). The threshold
belongs to the pair (world model, reflector): a refined world model is calibrated again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# imagined successes score lower than real ones: the grid reaches below the real-frame grid
IMAGINED_ETA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95


class NoFailures(ValueError):
    """The calibration episodes hold no failure within the horizon: no threshold to bound."""


def imagined_episodes(replays: list[Any]) -> list[Any]:
    """Labeled episodes of imagined frames: each replay's imagined frames with the real
    success labels of the steps they stand for (``simulator_service.evaluate.Replay``)."""
    from reflector_service.episodes import LabeledEpisode

    return [
        LabeledEpisode(
            episode_id=r.episode.episode_id,
            task_id=r.episode.task_id,
            instruction=r.episode.instruction,
            source=r.episode.source,
            images=torch.from_numpy(np.ascontiguousarray(r.imagined)),
            labels=np.asarray(r.episode.success[: len(r.imagined)], dtype=bool),
            store=r.store,
        )
        for r in replays
    ]


def calibrate_imagined_eta(
    simulator: str | Path,
    reflector: str | Path,
    data: list[str],
    *,
    max_steps: int,
    max_false_stops: float,
    max_episodes: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Choose eta for the reflector on the world model's frames.

    Args:
        simulator: world model checkpoint folder.
        reflector: reflector checkpoint folder (its hold is kept; only eta is chosen).
        data: held-out real episode stores, with failures (never the world model's or the
            reflector's training data, never evaluation starts).
        max_steps: imagined steps per episode (the rollout horizon).
        max_false_stops: the largest share of the episodes the rule may stop before a
            real success (failures stopped, successes stopped before their success frame).
        max_episodes: episodes replayed (the first ones in store order; None: all of them).
        seed: the world model's sampling seed.
    Returns:
        {"eta", "hold", "real_eta", "episodes", "successful_episodes", "failed_episodes",
         "max_steps", "max_false_stops", "missed_rate", "false_stop_rate",
         "early_termination_rate", "premature_rate", "seconds", "sweep"}.
    Raises:
        FileNotFoundError: a store in ``data`` does not exist.
        NoFailures: no failed episode among the replays (nothing to calibrate against).
        ValueError: a store of another frame size than the world model's.
    """
    from reflector_service.checkpoint import load_reflector
    from reflector_service.episodes import score_episodes
    from reflector_service.metrics import calibrate_termination
    from simulator_service.checkpoint import load_world_model
    from simulator_service.evaluate import imagine_episodes

    for d in data:
        if not Path(d).is_dir():
            raise FileNotFoundError(f"eta calibration data {d} does not exist")
    t0 = time.perf_counter()
    model = load_world_model(simulator)
    replays = imagine_episodes(
        model,
        list(data),
        max_episodes=max_episodes or 10**9,
        max_steps=max_steps,
        seed=seed,
        progress=progress,
        desc="imagine (eta calibration)",
    )
    del model
    episodes = imagined_episodes(replays)
    failed = sum(not e.succeeded for e in episodes)
    if not failed:
        raise NoFailures(
            f"eta calibration: none of the {len(episodes)} episodes of {list(data)} fails within "
            f"{max_steps} steps; the threshold needs failures to calibrate against"
        )
    refl = load_reflector(reflector)
    hold, eta, sweep = calibrate_termination(
        score_episodes(refl, episodes, hold=1),
        [e.labels for e in episodes],
        max_early_termination=max_false_stops,
        groups=[e.store for e in episodes],
        holds=(refl.cfg.hold,),
        etas=IMAGINED_ETA_GRID,
        bound="false_stop",
    )
    chosen = next(s for s in sweep if s["eta"] == eta)
    result = {
        "eta": eta,
        "hold": hold,
        "real_eta": refl.cfg.eta,
        "episodes": len(episodes),
        "successful_episodes": len(episodes) - failed,
        "failed_episodes": failed,
        "max_steps": max_steps,
        "max_false_stops": max_false_stops,
        "missed_rate": chosen["missed_rate"],
        "false_stop_rate": chosen["false_stop_rate"],
        "early_termination_rate": chosen["early_termination_rate"],
        "premature_rate": chosen["premature_rate"],
        "simulator": str(simulator),
        "reflector": str(reflector),
        "data": [str(d) for d in data],
        "seconds": round(time.perf_counter() - t0, 1),
        "sweep": sweep,
    }
    log(
        f"imagined eta {eta} (real frames: {refl.cfg.eta}) on {len(episodes)} imagined replays "
        f"({failed} failed): misses {_pct(chosen['missed_rate'])} of the successes, stops "
        f"{_pct(chosen['false_stop_rate'])} of the episodes before a real success (limit "
        f"{_pct(max_false_stops)})"
    )
    return result


def imagination_eta(
    cfg: Any,
    simulator: str,
    records: Path,
    *,
    when: str,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> float | None:
    """The eta a run in imagination acts with for ``simulator`` where the experiment
    calibrates one (``post_train.eta_calibration_data``, ``rollout.eta`` null), else None (the
    configured or the reflector checkpoint's). The choice is appended to the JSON file
    ``records`` ({"calibrations": [...]}, each with ``when``); a record for the same world
    model is reused (a resumed run). Where the episodes hold no failure, the reflector's own
    eta, with a warning.

    Args:
        cfg: the experiment (``cluster.config.ExperimentConfig``).
        simulator: the world model checkpoint the rollouts use now.
        records: the run's calibration file.
        when: what the record says prompted it (e.g. "start", "co-evolution round 1").
    """
    from core.fsutil import write_text_atomic
    from reflector_service.checkpoint import termination_eta

    pt, rc = cfg.post_train, cfg.rollout
    if not pt.eta_calibration_data:
        return None
    if rc.eta is not None:
        log(
            f"warning: rollout.eta = {rc.eta} is set, so post_train.eta_calibration_data is "
            "not used (set rollout.eta: null to calibrate the threshold for imagined frames)"
        )
        return None
    done = json.loads(records.read_text())["calibrations"] if records.is_file() else []
    rec = next((r for r in done if r["simulator"] == str(simulator)), None)
    if rec is None:
        log(f"calibrating eta for imagined frames ({when})")
        try:
            rec = calibrate_imagined_eta(
                simulator,
                pt.reflector,
                pt.eta_calibration_data,
                max_steps=rc.max_policy_steps * rc.execute_steps,
                max_false_stops=pt.eta_max_false_stops,
                seed=cfg.seed,
                progress=progress,
                log=log,
            )
        except NoFailures as e:  # nothing to bound: the reflector's own eta, said once
            log(f"warning: {e}; rollouts keep the reflector's eta")
            eta = termination_eta(None, pt.reflector)
            rec = {"eta": eta, "simulator": str(simulator), "skipped": str(e)}
        done.append({"when": when, **rec})
        write_text_atomic(records, json.dumps({"calibrations": done}, indent=1))
    return float(rec["eta"])


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


__all__ = [
    "IMAGINED_ETA_GRID",
    "NoFailures",
    "calibrate_imagined_eta",
    "imagination_eta",
    "imagined_episodes",
]
