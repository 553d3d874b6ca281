"""``rehearse dashboard``: Prometheus and Grafana on a Ray session's own configs, with ours added.

Ray's dashboard writes, for the session it runs in, a Prometheus config that scrapes the
session's nodes (``<session>/metrics/prometheus/prometheus.yml``) and a Grafana config whose
provisioning adds that Prometheus as datasource and Ray's dashboards
(``<session>/metrics/grafana/grafana.ini`` and ``provisioning/``; Ray's
``dashboard/modules/metrics/metrics_head.py``). This command adds the rehearse dashboard
(:func:`dashboard_json`) to that provisioning, next to Ray's, and runs both servers in the
foreground on loopback, where the Ray dashboard's metrics view looks for them (Prometheus at
:9090, Grafana at :3000). Nothing downloads: both binaries must be on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.metrics import ray_metric_name

HELP = "run Prometheus and Grafana on a Ray session's metrics, with the rehearse dashboard"

DASHBOARD_UID = "rehearse-loop"
DASHBOARD_FILE = "rehearse_grafana_dashboard.json"
PROMETHEUS_URL = "http://127.0.0.1:9090"
GRAFANA_URL = "http://127.0.0.1:3000"
_SESSION = 'SessionName=~"$SessionName"'  # the label Ray puts on every metric


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--session",
        default=None,
        metavar="DIR",
        help="the Ray session folder (e.g. /tmp/ray/session_latest); default: the newest "
        "session under Ray's temp folder that has metrics configs",
    )
    p.add_argument(
        "--print",
        action="store_true",
        help="only print the two commands (Prometheus, Grafana), start nothing",
    )


def run(args: argparse.Namespace) -> int:
    session = _session_folder(args.session)
    installed = install_dashboard(session)
    prometheus = shutil.which("prometheus")
    grafana = shutil.which("grafana-server") or shutil.which("grafana")
    commands = server_commands(session, prometheus=prometheus, grafana=grafana)
    if args.print:
        print(f"# Ray session {session}; rehearse dashboard: {installed}")
        for c in commands:
            print(shlex.join(c))
        return 0
    missing = []
    if prometheus is None:
        missing.append(
            "prometheus is not on PATH: download it from https://prometheus.io/download/ (or "
            "let `ray metrics launch-prometheus` fetch it, on a machine with network) and put "
            "the folder holding `prometheus` on PATH"
        )
    if grafana is None:
        missing.append(
            "grafana-server is not on PATH: download Grafana from "
            "https://grafana.com/grafana/download and put its bin/ folder on PATH"
        )
    for line in missing:
        print(f"rehearse dashboard: {line}", file=sys.stderr)
    if missing:
        return 1
    print(f"Ray session {session}")
    print(f"Prometheus: {PROMETHEUS_URL}")
    print(f"Grafana: {GRAFANA_URL}/d/{DASHBOARD_UID} (Ctrl-C stops both)")
    return _serve(commands)


def _session_folder(session: str | None) -> Path:
    """The Ray session folder named by ``--session``, else the newest one with metrics configs
    under Ray's temp folders; FileNotFoundError naming the path when there is none."""
    if session is not None:
        folder = Path(session)
        if not folder.is_dir():
            raise FileNotFoundError(f"Ray session {session} does not exist")
        missing = [f for f in _config_files(folder) if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Ray session {session} has no metrics configs ({missing[0]} is missing): Ray "
                "writes them when its dashboard runs (--set cluster.dashboard=true, or "
                "ray start --head)"
            )
        return folder.resolve()
    roots = _default_temp_dirs()
    found = [
        s
        for root in roots
        for s in root.glob("session_2*")
        if all(f.is_file() for f in _config_files(s))
    ]
    if not found:
        raise FileNotFoundError(
            f"no Ray session with metrics configs under {' or '.join(map(str, roots))}: start "
            "Ray with its dashboard (--set cluster.dashboard=true, or ray start --head), or "
            "name the session with --session DIR"
        )
    return max(found, key=lambda s: s.name).resolve()  # session_<date>_<time>_...: newest last


def _default_temp_dirs() -> list[Path]:
    """Where Ray keeps its sessions: its default temp folder (``$RAY_TMPDIR``, else ``$TMPDIR``
    on Linux, else /tmp, then ``ray``: ``ray._common.utils.get_default_ray_temp_dir``) and
    /tmp/ray, where a cluster started from another shell may be."""
    linux_tmp = os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    base = Path(os.environ.get("RAY_TMPDIR") or linux_tmp or "/tmp")
    return list(dict.fromkeys([base / "ray", Path("/tmp/ray")]))


def _config_files(session: Path) -> tuple[Path, Path, Path]:
    """Ray's generated Prometheus config, Grafana config and dashboard provisioning file."""
    metrics = session / "metrics"
    return (
        metrics / "prometheus" / "prometheus.yml",
        metrics / "grafana" / "grafana.ini",
        metrics / "grafana" / "provisioning" / "dashboards" / "default.yml",
    )


def install_dashboard(session: Path) -> Path:
    """Write :func:`dashboard_json` into the folder Ray's dashboard provisioning serves (where
    Ray puts its own ``*_grafana_dashboard.json``), so Grafana lists it in Ray's folder.

    Returns:
        the written file.
    """
    import yaml

    from core.fsutil import write_text_atomic

    provisioning = _config_files(session)[2]
    providers = (yaml.safe_load(provisioning.read_text()) or {}).get("providers") or []
    folders = [p["options"]["path"] for p in providers if p.get("options", {}).get("path")]
    if not folders:
        raise ValueError(f"{provisioning} names no dashboard folder (providers[].options.path)")
    folder = Path(folders[0])
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / DASHBOARD_FILE, json.dumps(dashboard_json(), indent=1))


def server_commands(
    session: Path, *, prometheus: str | None, grafana: str | None
) -> list[list[str]]:
    """The Prometheus and Grafana command lines on ``session``'s generated configs (Ray's
    recipe), both on loopback, their data in the session folder (so neither needs a writable
    install folder), and Grafana's provisioning taken from this session (Ray's ``grafana.ini``
    names ``session_latest``'s, which a later session without a dashboard leaves without one).

    Args:
        prometheus, grafana: the binaries' paths; None prints the usual names.
    """
    prom_yml, grafana_ini, _ = _config_files(session)
    data = session / "metrics" / "grafana" / "data"
    prom = [
        prometheus or "prometheus",
        f"--config.file={prom_yml}",
        f"--storage.tsdb.path={prom_yml.parent / 'data'}",
        f"--web.listen-address={PROMETHEUS_URL.removeprefix('http://')}",
    ]
    graf = [grafana or "grafana-server"]
    if grafana is not None and Path(grafana).name == "grafana":
        graf.append("server")  # Grafana >= 11: `grafana server`; grafana-server is its shim
    home = _grafana_home(grafana)
    if home is not None:
        graf += ["--homepath", str(home)]
    graf += [
        "--config",
        str(grafana_ini),
        f"cfg:paths.provisioning={grafana_ini.parent / 'provisioning'}",
        f"cfg:paths.data={data}",
        f"cfg:paths.logs={data / 'log'}",
        f"cfg:paths.plugins={data / 'plugins'}",
        "cfg:server.http_addr=127.0.0.1",
    ]
    return [prom, graf]


def _grafana_home(grafana: str | None) -> Path | None:
    """Grafana's install folder (``conf/defaults.ini``, ``public/``): beside ``bin/`` in the
    release archive, ``share/grafana`` for Homebrew and the Linux packages; None lets Grafana
    look from the working folder."""
    if grafana is None:
        return None
    prefix = Path(grafana).resolve().parent.parent
    for home in (prefix, prefix / "share" / "grafana", Path("/usr/share/grafana")):
        if (home / "conf" / "defaults.ini").is_file():
            return home
    return None


def _serve(commands: list[list[str]]) -> int:
    """Run the servers until Ctrl-C (0) or until one of them exits (1); both are stopped."""
    procs = [subprocess.Popen(c) for c in commands]
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        name, rc = next(
            (Path(c[0]).name, p.returncode)
            for c, p in zip(commands, procs, strict=True)
            if p.returncode is not None
        )
        print(f"rehearse dashboard: {name} exited with status {rc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _gauge(key: str) -> str:
    """The Prometheus series of a logged metric key, in the dashboard's session."""
    return f"ray_{ray_metric_name(key)}{{{_SESSION}}}"


def _latency(service: str, q: float) -> str:
    bucket = f"ray_rehearse_{service}_request_latency_ms_bucket{{{_SESSION}}}"
    return f"histogram_quantile({q}, sum by (le) (rate({bucket}[$__rate_interval])))"


# (title, unit, description, [(PromQL, legend)]); series: cluster.metrics (ray_metric_name of
# the keys the driver logs, and ServiceGauges)
_PANELS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "Rollout reward (mean)",
        "none",
        "Mean reward of the iteration's rollouts (rollout/reward_mean).",
        [(_gauge("rollout/reward_mean"), "reward")],
    ),
    (
        "Rollout success",
        "percentunit",
        "Share of the iteration's rollouts that ended in success (rollout/success).",
        [(_gauge("rollout/success"), "success")],
    ),
    (
        "Approximate KL",
        "none",
        "Mean (r - 1) - log r over the update's valid units (learner/approx_kl).",
        [(_gauge("learner/approx_kl"), "approx_kl")],
    ),
    (
        "Clip fraction",
        "percentunit",
        "Share of units whose ratio left [1 - eps, 1 + eps] (learner/clip_frac).",
        [(_gauge("learner/clip_frac"), "clip_frac")],
    ),
    (
        "Service request latency",
        "ms",
        "Per request, batching wait included (ServiceGauges' histograms), all replicas.",
        [
            (_latency(s, q), f"{name} p{round(q * 100)}")
            for s, name in (("sim", "world model"), ("reflector", "reflector"))
            for q in (0.5, 0.95)
        ],
    ),
    (
        "Service batch size",
        "none",
        "Environments per model call, mean over replicas (ServiceGauges).",
        [
            (f"avg(ray_rehearse_{s}_batch_size{{{_SESSION}}})", name)
            for s, name in (("sim", "world model"), ("reflector", "reflector"))
        ],
    ),
    (
        "Env steps per second",
        "none",
        "Environment steps of the roll-out step per second of it (throughput/env_steps_per_s).",
        [(_gauge("throughput/env_steps_per_s"), "env steps/s")],
    ),
    (
        "Iteration steps",
        "s",
        "Seconds of each runner step per iteration: roll out, update, weight broadcast.",
        [
            (_gauge("timers/rollout_s"), "roll out"),
            (_gauge("timers/update_s"), "update"),
            (_gauge("broadcast/time_s"), "broadcast"),
        ],
    ),
]


def dashboard_json() -> dict[str, Any]:
    """The rehearse Grafana dashboard: the run's ``ray_rehearse_*`` series, two panels a row,
    on the Prometheus datasource as Ray's own dashboards reference it (a hidden ``datasource``
    variable) and filtered by Ray's ``SessionName`` label."""
    panels = [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "description": description,
            "datasource": "${datasource}",
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"expr": expr, "legendFormat": legend, "refId": chr(ord("A") + j)}
                for j, (expr, legend) in enumerate(targets)
            ],
        }
        for i, (title, unit, description, targets) in enumerate(_PANELS)
    ]
    session_query = f"label_values(ray_{ray_metric_name('rollout/reward_mean')}, SessionName)"
    return {
        "uid": DASHBOARD_UID,
        "title": "rehearse: LOOP post-training",
        "tags": ["rehearse"],
        "editable": True,
        "schemaVersion": 27,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "hide": 2},
                {
                    "name": "SessionName",
                    "type": "query",
                    "description": "The Ray session (one per cluster start).",
                    "datasource": "${datasource}",
                    "definition": session_query,
                    "query": {"query": session_query, "refId": "StandardVariableQuery"},
                    "refresh": 2,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "sort": 2,
                },
            ]
        },
        "panels": panels,
    }
