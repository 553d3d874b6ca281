"""Local means local: with no address, a run starts its own Ray even when ``ray start`` left
another cluster recorded on the machine (plain ``ray.init()`` would join that one), and every
process of it listens on loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow]

PROBE = """
from cluster.ray_session import init_ray
import ray
init_ray(num_cpus=1)
print("GCS", ray.get_runtime_context().gcs_address)
"""


LISTENERS = """
import ipaddress, os, psutil, ray
from cluster.ray_session import init_ray
init_ray(num_cpus=1, include_dashboard=True)

@ray.remote
class Probe:
    def pid(self):
        return os.getpid()

probe = Probe.remote()
ray.get(probe.pid.remote())
tree = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
for c in psutil.net_connections(kind="inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in tree:
        ip = ipaddress.ip_address(c.laddr.ip)
        ip = getattr(ip, "ipv4_mapped", None) or ip
        print("LISTEN", ip, c.laddr.port, ip.is_loopback, psutil.Process(c.pid).name())
print("NODE", ray.util.get_node_ip_address())
"""


def test_a_local_run_listens_on_loopback_only() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [sys.executable, "-c", LISTENERS], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    listening = [line.split() for line in lines if line.startswith("LISTEN")]
    assert len(listening) >= 4, out.stdout  # GCS, raylet, the driver's and the actor's workers
    exposed = [line for line in listening if line[3] != "True"]
    assert not exposed, f"sockets beyond loopback: {exposed}"
    assert "NODE 127.0.0.1" in lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_run_never_joins_a_cluster_that_ray_start_left(tmp_path) -> None:
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    other = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--block",
         "--include-dashboard=false", "--node-ip-address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # the other cluster is up once its GCS port answers
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the other Ray cluster did not start")
        out = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        gcs = [line for line in out.stdout.splitlines() if line.startswith("GCS")][0]
        assert not gcs.endswith(f":{port}"), f"the run joined the other cluster ({gcs})"
    finally:
        os.killpg(other.pid, signal.SIGTERM)  # only the cluster this test started
        other.wait(timeout=60)
