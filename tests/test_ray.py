"""The Ray executor: a local instance, a real two-node cluster, a worker killed mid-run.

Ray binds the machine's own address even when told 127.0.0.1, so every Ray test runs in
a network namespace that holds only loopback: ``test_ray_tests_in_a_loopback_namespace``
runs this file again under ``unshare -n`` and the tests marked ``ray`` skip anywhere else.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from resnet_exp.runs.rundir import TIMING_COLUMNS, RunDir, RunStatus
from resnet_exp.runs.runner import ExecutorChoice, run_experiments

from .conftest import write_experiment

REPO = Path(__file__).resolve().parents[1]
RAY_PORT = 6390


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


inside = pytest.mark.skipif(not loopback_only(), reason="runs only in a loopback-only network namespace")


def test_ray_tests_in_a_loopback_namespace(tmp_path):
    if loopback_only():
        pytest.skip("already inside the namespace")
    missing = [what for what, ok in (("ray", ray_installed()), ("unshare", shutil.which("unshare")),
                                     ("ip", shutil.which("ip"))) if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Ray tests; missing: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")
    cmd = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider -m ray "
           f"--basetemp={tmp_path / 'inner'} {Path(__file__)}")
    # Ray's own folder (sessions, sockets, and `ray_current_cluster`, which `ray.init` follows to
    # an earlier cluster) is private to this test: a Ray killed elsewhere on the machine leaves
    # that file behind, and following it hangs `ray.init`. Short, under /tmp: Ray's Unix socket
    # paths must stay under 107 characters.
    ray_tmp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(["unshare", "-n", "bash", "-c", cmd], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert " passed" in out and " skipped" not in out.splitlines()[-1], out[-3000:]


# --------------------------------------------------------------------------- inside the namespace
SMOKE = """
rows:
  - {model: resnet8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: plain8, iterations: 30, milestones: [20], eval_every: 10}
  - {model: resnet8, name: resnet8-B, shortcut: B, iterations: 20, milestones: [10], eval_every: 10}
  - {model: plain8, name: plain8-s, iterations: 20, milestones: [10], eval_every: 10, seeds: [2]}
"""


def logs(results: Path) -> dict[str, list[dict]]:
    return {run.key: [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in run.read_log()]
            for run in RunDir.all_in(results)}


@pytest.fixture()
def kw(tiny_tar, tmp_path):
    return dict(profile="smoke", data=str(tiny_tar), device="cpu", progress=False, data_dir=tmp_path / "data",
                estimate=False)


@pytest.fixture()
def two_node_cluster(tmp_path):
    """A head and a second node, each its own `ray start`, on 127.0.0.1."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    # Ray authenticates cluster members with a token: one for this cluster, given to both nodes
    # and to the driver, so nothing depends on what ~/.ray holds. The driver is a process of
    # its own: Ray caches the token once per process, and this one may have run Ray already.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run([ray_cli, "start", "--head", f"--port={RAY_PORT}", "--include-dashboard=false", *common],
                   check=True, env=env, capture_output=True, timeout=180)
    try:
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{RAY_PORT}", *common],
                       check=True, env=env, capture_output=True, timeout=180)
        yield f"127.0.0.1:{RAY_PORT}", env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.ray
@inside
def test_local_ray_gives_the_sequential_logs(kw, tmp_path):
    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    assert run_experiments([str(exp)], results=str(tmp_path / "ray"),
                           executor=ExecutorChoice(kind="ray", cpus_per_run=1, threads=1), **kw) == 0
    assert logs(tmp_path / "ray") == logs(tmp_path / "seq") and len(logs(tmp_path / "seq")) == 4
    for run in RunDir.all_in(tmp_path / "ray"):
        assert run.read_meta()["worker"]["executor"] == "ray"


@pytest.mark.ray
@inside
def test_two_node_cluster_runs_land_on_both_nodes(tiny_tar, tmp_path, two_node_cluster):
    address, env = two_node_cluster
    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    proc = subprocess.run([sys.executable, "-m", "resnet_exp", "run", str(exp), "--profile", "smoke", "--data",
                           str(tiny_tar), "--device", "cpu", "--results", str(tmp_path / "r"), "--threads", "1",
                           "--executor", "ray", "--ray-address", address],
                          cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metas = [run.read_meta() for run in RunDir.all_in(tmp_path / "r")]
    assert len(metas) == 4 and all(m["status"] == RunStatus.FINISHED for m in metas)
    assert len({m["worker"]["node"] for m in metas}) == 2  # both nodes trained
    assert "[ray] 2 node(s)" in proc.stdout


@pytest.mark.ray
@inside
def test_a_killed_worker_is_retried_and_resumes_exactly(kw, tmp_path):
    exp = write_experiment(tmp_path / "k.yaml", """
rows:
  - {model: resnet8, iterations: 240, milestones: [120, 200], eval_every: 20, batch_size: 16}
""")
    killed: list[int] = []

    def kill_the_worker_mid_run() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            for run in RunDir.all_in(tmp_path / "ray"):
                meta = run.read_meta() or {}
                if len(run.read_log()) >= 3 and meta.get("status") == "running":
                    pid = meta["worker"]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_worker_mid_run, daemon=True)
    killer.start()
    assert run_experiments([str(exp)], results=str(tmp_path / "ray"),
                           executor=ExecutorChoice(kind="ray", threads=1), **kw) == 0
    killer.join()
    assert killed, "the run ended before its worker could be killed: make it longer"
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    run = next(RunDir.all_in(tmp_path / "ray"))
    meta = run.read_meta()
    assert meta["status"] == "finished" and len(meta["attempts"]) == 2  # retried by Ray
    assert meta["attempts"][0]["pid"] == killed[0] and meta["attempts"][1]["from_iteration"] > 0
    assert [r["iteration"] for r in run.read_log()] == [str(i) for i in range(20, 241, 20)]
    assert logs(tmp_path / "ray") == logs(tmp_path / "seq")


@pytest.mark.ray
@inside
def test_a_node_that_cannot_see_the_results_is_named(tmp_path):
    import ray

    from resnet_exp.runs.ray_executor import RayUnavailable, check_shared_storage

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        check_shared_storage(ray, tmp_path, [str(tmp_path)])  # this machine sees itself
        with pytest.raises(RayUnavailable, match="(?s)cannot see /no/such/data.*shared filesystem"):
            check_shared_storage(ray, tmp_path, ["/no/such/data"])
    finally:
        ray.shutdown()
