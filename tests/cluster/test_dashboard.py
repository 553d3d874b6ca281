"""``rehearse dashboard`` without Prometheus or Grafana installed: the missing-binary lines, the
two printed commands on a session folder laid out as Ray's dashboard writes it, the servers
started and stopped (stand-in binaries), bad sessions, and a dashboard whose every series is one
our code emits."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.commands import dashboard
from cluster.metrics import ServiceGauges, ray_metric_name

ROOT = Path(__file__).resolve().parents[2]

# keys the run logs (MetricsLogger -> Ray gauge ray_metric_name(key)) -> the file and the code that
# emits each, grepped from the source
LOGGED = {
    "rollout/reward_mean": ("cluster/driver.py", '"rollout/reward_mean":'),
    "rollout/success": ("cluster/driver.py", '"rollout/success":'),
    "throughput/env_steps_per_s": ("cluster/driver.py", '"throughput/env_steps_per_s":'),
    "timers/rollout_s": ("cluster/driver.py", '"timers/rollout_s":'),
    "timers/update_s": ("cluster/driver.py", 'self.timers("update")'),  # Timers: timers/<step>_s
    "broadcast/time_s": ("cluster/driver.py", '"broadcast/time_s":'),
    "learner/approx_kl": ("learner/learner.py", '"approx_kl"'),  # _STAT_KEYS, as learner/<key>
    "learner/clip_frac": ("learner/learner.py", '"clip_frac"'),
}


def _session(root: Path, name: str = "session_2026-01-02_03-04-05_000001_42") -> Path:
    """A session folder with the metrics configs Ray's dashboard writes (metrics_head.py)."""
    s = root / name
    metrics = s / "metrics"
    (metrics / "prometheus").mkdir(parents=True)
    (metrics / "prometheus" / "prometheus.yml").write_text(
        f"scrape_configs:\n- job_name: 'ray'\n  file_sd_configs:\n  - files:\n"
        f"    - '{s}/prom_metrics_service_discovery.json'\n"
    )
    grafana = metrics / "grafana"
    (grafana / "provisioning" / "dashboards").mkdir(parents=True)
    (grafana / "provisioning" / "datasources").mkdir()
    (grafana / "dashboards").mkdir()
    (grafana / "dashboards" / "default_grafana_dashboard.json").write_text("{}")
    (grafana / "grafana.ini").write_text(
        f"[paths]\nprovisioning = {root}/session_latest/metrics/grafana/provisioning\n"
    )
    (grafana / "provisioning" / "dashboards" / "default.yml").write_text(
        "apiVersion: 1\n\nproviders:\n  - name: Ray    # Default dashboards provided by OSS Ray\n"
        f"    folder: Ray\n    type: file\n    options:\n      path: {grafana / 'dashboards'}\n"
    )
    return s


def _fake_bin(folder: Path, name: str, body: str) -> Path:
    """A stand-in executable that records its arguments in ``<folder>/<name>.args``."""
    folder.mkdir(exist_ok=True)
    f = folder / name
    f.write_text(f'#!/bin/sh\necho "$@" > "{folder}/{name}.args"\n{body}\n')
    f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return f


def test_missing_binaries_are_one_line_each_and_exit_1(tmp_path, monkeypatch, capsys) -> None:
    s = _session(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["dashboard", "--session", str(s)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "prometheus is not on PATH" in err[0] and "prometheus.io/download" in err[0]
    assert "grafana-server is not on PATH" in err[1] and "grafana.com/grafana/download" in err[1]
    # only Grafana missing: one line
    _fake_bin(tmp_path / "bin", "prometheus", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert main(["dashboard", "--session", str(s)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grafana-server is not on PATH" in err[0], err
    assert not (tmp_path / "bin" / "prometheus.args").exists()  # nothing started


def test_print_shows_both_commands_on_the_sessions_configs(tmp_path, monkeypatch, capsys) -> None:
    s = _session(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["dashboard", "--session", str(s), "--print"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    assert len(lines) == 2, lines
    prom, graf = (line.split() for line in lines)
    m = s.resolve() / "metrics"
    assert prom[0] == "prometheus"
    assert f"--config.file={m / 'prometheus' / 'prometheus.yml'}" in prom
    assert "--web.listen-address=127.0.0.1:9090" in prom
    assert graf[0] == "grafana-server"
    assert graf[graf.index("--config") + 1] == str(m / "grafana" / "grafana.ini")
    # this session's provisioning, not session_latest's (which grafana.ini names)
    assert f"cfg:paths.provisioning={m / 'grafana' / 'provisioning'}" in graf
    assert "cfg:server.http_addr=127.0.0.1" in graf


def test_the_newest_session_with_configs_is_the_default(tmp_path, monkeypatch, capsys) -> None:
    old = _session(tmp_path, "session_2026-01-01_00-00-00_000001_1")
    new = _session(tmp_path, "session_2026-03-01_00-00-00_000001_2")
    (tmp_path / "session_2026-05-01_00-00-00_000001_3").mkdir()  # no dashboard: no configs
    monkeypatch.setattr(dashboard, "_default_temp_dirs", lambda: [tmp_path])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["dashboard", "--print"]) == 0
    out = capsys.readouterr().out
    assert str(new.resolve() / "metrics") in out and str(old) not in out
    monkeypatch.setattr(dashboard, "_default_temp_dirs", lambda: [tmp_path / "none"])
    assert main(["dashboard", "--print"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no Ray session with metrics configs under {tmp_path}" in err[0]


def test_the_dashboard_json_goes_where_rays_provisioning_serves_it(tmp_path, monkeypatch) -> None:
    s = _session(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["dashboard", "--session", str(s), "--print"]) == 0
    folder = s / "metrics" / "grafana" / "dashboards"
    assert sorted(p.name for p in folder.iterdir()) == [
        "default_grafana_dashboard.json",
        "rehearse_grafana_dashboard.json",
    ]
    assert json.loads((folder / "rehearse_grafana_dashboard.json").read_text()) == (
        dashboard.dashboard_json()
    )


@pytest.mark.parametrize(
    ("damage", "names"),
    [
        ("absent", "Ray session {s} does not exist"),
        ("no_metrics", "Ray session {s} has no metrics configs ({s}/metrics/prometheus/"),
        ("no_provisioning", "dashboards/default.yml is missing"),
    ],
)
def test_a_bad_session_is_one_line_naming_it(tmp_path, capsys, damage, names) -> None:
    s = tmp_path / "session_x"
    if damage == "no_metrics":
        s.mkdir()
    elif damage == "no_provisioning":
        _session(tmp_path, s.name)
        (s / "metrics" / "grafana" / "provisioning" / "dashboards" / "default.yml").unlink()
    assert main(["dashboard", "--session", str(s)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names.format(s=s) in err[0], err


def test_both_servers_start_and_both_stop_when_one_exits(tmp_path, monkeypatch, capsys) -> None:
    s = _session(tmp_path)
    bin_ = tmp_path / "bin"
    sleep = shutil.which("sleep")
    _fake_bin(bin_, "prometheus", f'echo $$ > "{bin_}/prometheus.pid"\nexec {sleep} 60')
    wait = f'while [ ! -f "{bin_}/prometheus.pid" ]; do {sleep} 0.1; done'
    _fake_bin(bin_, "grafana-server", f"{wait}\nexit 3")  # once Prometheus runs
    monkeypatch.setenv("PATH", str(bin_))
    assert main(["dashboard", "--session", str(s)]) == 1
    out, err = capsys.readouterr()
    assert "Prometheus: http://127.0.0.1:9090" in out and "Grafana: http://127.0.0.1:3000" in out
    assert "grafana-server exited with status 3" in err
    m = s.resolve() / "metrics"
    assert f"--config.file={m / 'prometheus' / 'prometheus.yml'}" in (
        (bin_ / "prometheus.args").read_text().split()
    )
    assert str(m / "grafana" / "grafana.ini") in (bin_ / "grafana-server.args").read_text()
    pid = int((bin_ / "prometheus.pid").read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)


def test_ctrl_c_stops_both_servers(tmp_path, monkeypatch) -> None:
    s = _session(tmp_path)
    bin_ = tmp_path / "bin"
    sleep = shutil.which("sleep")
    for name in ("prometheus", "grafana-server"):
        _fake_bin(bin_, name, f'echo $$ > "{bin_}/{name}.pid"\nexec {sleep} 60')
    monkeypatch.setenv("PATH", str(bin_))

    real_sleep, pressed = time.sleep, []

    def ctrl_c(seconds: float) -> None:  # the wait loop's sleep: Ctrl-C once both servers run
        running = all((bin_ / f"{n}.pid").exists() for n in ("prometheus", "grafana-server"))
        if running and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt
        real_sleep(min(seconds, 0.05))  # also Popen.wait's polling while the servers stop

    monkeypatch.setattr(dashboard.time, "sleep", ctrl_c)
    assert main(["dashboard", "--session", str(s)]) == 0 and pressed
    for name in ("prometheus", "grafana-server"):
        with pytest.raises(ProcessLookupError):
            os.kill(int((bin_ / f"{name}.pid").read_text()), 0)


def _emitted_series(monkeypatch) -> set[str]:
    """The Prometheus series our code emits: ``ray_`` + the gauge of every logged key, and the
    gauges and histograms ServiceGauges registers (names recorded from its own calls)."""
    for key, (path, code) in LOGGED.items():
        assert code in (ROOT / path).read_text(), f"{key}: {code} is gone from {path}"
    series = {f"ray_{ray_metric_name(k)}" for k in LOGGED}
    from ray.util import metrics

    def recorder(suffixes: tuple[str, ...]):
        def make(name: str, **_kw):
            series.update(f"ray_{name}{s}" for s in suffixes)

        return make

    monkeypatch.setattr(metrics, "Gauge", recorder(("",)))
    monkeypatch.setattr(metrics, "Histogram", recorder(("_bucket", "_sum", "_count")))
    for service in ("sim", "reflector"):  # the names simulator_service / reflector_service pass
        ServiceGauges(service)
    return series


def test_every_panel_shows_series_our_code_emits(monkeypatch) -> None:
    board = json.loads(json.dumps(dashboard.dashboard_json()))  # valid JSON
    emitted = _emitted_series(monkeypatch)
    assert "ray_rehearse_rollout_success" in emitted  # the README's name
    assert "ray_rehearse_sim_request_latency_ms_bucket" in emitted
    used = set()
    for panel in board["panels"]:
        assert panel["datasource"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bray_rehearse_\w+", target["expr"]))
            assert names and names <= emitted, (panel["title"], names - emitted)
            used |= names
    # each asked-for series has a panel: reward, success, KL, clip fraction, world-model latency
    # and batch size, throughput, broadcast time
    logged = {f"ray_{ray_metric_name(k)}" for k in LOGGED}
    services = {
        "ray_rehearse_sim_request_latency_ms_bucket",
        "ray_rehearse_sim_batch_size",
        "ray_rehearse_reflector_request_latency_ms_bucket",
        "ray_rehearse_reflector_batch_size",
    }
    assert used == logged | services
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "SessionName"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
