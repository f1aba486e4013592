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
from resnet_exp.runs.executing.runner import ExecutorChoice, run_experiments

from .conftest import write_experiment
from .plugin_files import LSNET, ROWS, SCALED, write_plugin_experiment

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
                              text=True, timeout=1800)
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


class Cluster:
    """A head and a second node, each its own `ray start`, on 127.0.0.1. With ``hidden``,
    the second node runs in a mount namespace of its own where ``hidden`` is an empty tmpfs:
    it cannot see the driver's results folder or the data (checked before it starts)."""

    def __init__(self, hidden: Path | None = None) -> None:
        self.ray_cli = str(Path(sys.executable).parent / "ray")
        # Ray authenticates cluster members with a token: one for this cluster, given to both
        # nodes and to the driver, so nothing depends on what ~/.ray holds. The driver is a
        # process of its own: Ray caches the token once per process, and this one may have
        # run Ray already.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "PYTHONPATH": str(REPO)}
        self.address = f"127.0.0.1:{RAY_PORT}"
        common = "--node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats"
        self.run(f"{self.ray_cli} start --head --port={RAY_PORT} --include-dashboard=false {common}")
        start = f"{self.ray_cli} start --address={self.address} {common}"
        self.namespace = None
        if hidden is not None:
            # the node's processes (raylet, workers) inherit this mount namespace; its id is
            # how the test finds them to kill the node
            start = (f"unshare -m --propagation private bash -c 'mount -t tmpfs none {hidden} && "
                     f"test -z \"$(ls -A {hidden})\" && readlink /proc/self/ns/mnt && exec {start}'")
        out = self.run(start)
        if hidden is not None:
            self.namespace = out.splitlines()[0].strip()
            assert self.namespace.startswith("mnt:") and self.namespace != os.readlink("/proc/self/ns/mnt")

    def run(self, cmd: str) -> str:
        proc = subprocess.run(["bash", "-c", cmd], env=self.env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    def kill_second_node(self) -> int:
        """SIGKILL every process of the second node (raylet, workers): the node dies."""
        pids = []
        for ns in Path("/proc").glob("[0-9]*/ns/mnt"):
            try:
                if os.readlink(ns) == self.namespace:
                    pids.append(int(ns.parts[2]))
            except OSError:
                continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        subprocess.run([self.ray_cli, "stop", "--force"], env=self.env, capture_output=True, timeout=120)
        if self.namespace:
            self.kill_second_node()

    def driver(self, exp: Path, data: Path, results: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "resnet_exp", "run", str(exp), "--profile", "smoke", "--data", str(data),
                "--device", "cpu", "--results", str(results), "--threads", "1", "--executor", "ray",
                "--ray-address", self.address, *extra]


@pytest.fixture()
def two_node_cluster():
    cluster = Cluster()
    try:
        yield cluster.address, cluster.env
    finally:
        cluster.stop()


@pytest.fixture()
def cluster_without_shared_storage(tmp_path_factory):
    """The second node sees nothing of pytest's temporary folders: not the results, not the data."""
    cluster = Cluster(hidden=tmp_path_factory.getbasetemp())
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.ray
@inside
def test_local_ray_gives_the_sequential_logs_with_either_storage(kw, tmp_path, capfd):
    exp = write_experiment(tmp_path / "smoke.yaml", SMOKE)
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    assert run_experiments([str(exp)], results=str(tmp_path / "ray"),
                           executor=ExecutorChoice(kind="ray", cpus_per_run=1, threads=1), **kw) == 0
    assert "[ray] storage: shared" in capfd.readouterr().out
    # the files back through Ray, as on a cluster without a shared filesystem
    assert run_experiments([str(exp)], results=str(tmp_path / "back"),
                           executor=ExecutorChoice(kind="ray", threads=1, ray_storage="driver"), **kw) == 0
    assert "[ray] storage: the driver's (--ray-storage driver)" in capfd.readouterr().out
    assert logs(tmp_path / "ray") == logs(tmp_path / "seq") == logs(tmp_path / "back")
    assert len(logs(tmp_path / "seq")) == 4
    for run in RunDir.all_in(tmp_path / "ray"):
        assert run.read_meta()["worker"]["executor"] == "ray"
    for run in RunDir.all_in(tmp_path / "back"):
        seq = RunDir.for_run(tmp_path / "seq", run.experiment, run.name)
        assert run.check().ok and run.read_meta()["worker"]["storage"] == "driver"
        assert sorted(p.name for p in run.path.iterdir()) == sorted(p.name for p in seq.path.iterdir())
        for name in ("model.pt", "signals.csv", "responses.csv", "mean.pt"):  # what the run wrote, whole
            assert (run.path / name).read_bytes() == (seq.path / name).read_bytes(), name


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
def test_a_node_that_cannot_see_the_results_trains_and_sends_them_back(kw, tiny_tar, tmp_path,
                                                                        cluster_without_shared_storage):
    """Every run is a plug-in's model (tests/plugin_files.py), so the node that sees nothing
    imports the plug-in from the text that came with its job, its hash checked there. One is a
    whole network without response_modules() (issue 55): it finishes there too, Figure 7 left out."""
    cluster = cluster_without_shared_storage
    exp = write_plugin_experiment(tmp_path / "mine", ROWS + "  - {model: lsnet8, iterations: 20, milestones: [10], "
                                  "eval_every: 10}\n", plugin=SCALED + LSNET, name="smoke")
    proc = subprocess.run(cluster.driver(exp, tiny_tar, tmp_path / "r"), cwd=tmp_path, env=cluster.env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[ray] 2 node(s)" in proc.stdout and "[ray] storage: the driver's (some node cannot see it" in proc.stdout
    assert f"cannot see the results folder {tmp_path / 'r'}" in proc.stdout
    runs = list(RunDir.all_in(tmp_path / "r"))
    metas = [run.read_meta() for run in runs]
    assert len(metas) == 5 and all(m["status"] == RunStatus.FINISHED for m in metas)
    assert len({m["worker"]["node"] for m in metas}) == 2  # the node that sees nothing trained too
    assert all(run.check().ok and run.plugin_path("scaled.py").exists() for run in runs)
    assert [m["analyses_skipped"] for m in metas if m["config"]["model"] == "lsnet8"] == [
        {"responses": "Figure 7's responses: LSNet offers no response_modules() (optional; docs/plugins.md says what "
                      "it returns)"}]
    assert all(m["config"]["plugins"][0]["file"] == "scaled.py" for m in metas)
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    assert logs(tmp_path / "r") == logs(tmp_path / "seq")


@pytest.mark.ray
@inside
def test_a_dead_node_s_run_resumes_on_the_head_from_the_checkpoint_that_came_back(
        kw, tiny_tar, tmp_path, cluster_without_shared_storage):
    cluster = cluster_without_shared_storage
    exp = write_experiment(tmp_path / "k.yaml", """
rows:
  - {model: resnet8, iterations: 240, milestones: [120, 200], eval_every: 20, batch_size: 16}
""")
    # The head's one CPU is taken until the second node is dead: the run starts there, and
    # its retry can only go to the head.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_HEAD, cluster.address], env=cluster.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    driver = None
    try:
        assert holder.stdout.readline().strip() == "holding"
        driver = subprocess.Popen(cluster.driver(exp, tiny_tar, tmp_path / "r"), cwd=tmp_path, env=cluster.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        killed_at = None
        deadline = time.time() + 300
        while killed_at is None and time.time() < deadline and driver.poll() is None:
            for run in RunDir.all_in(tmp_path / "r"):  # the driver's folder: what came back
                meta = run.read_meta() or {}
                if run.has_checkpoint() and (meta.get("iteration") or 0) >= 40 and meta.get("status") == "running":
                    killed_at = meta["iteration"]
                    assert cluster.kill_second_node() > 0
            time.sleep(0.02)
        assert killed_at, "the run ended (or never checkpointed) before its node could be killed"
        holder.stdin.close()  # the head's CPU is free: Ray retries the task there
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out[-4000:]
    finally:
        for p in (holder, driver):
            if p is not None and p.poll() is None:
                p.kill()
    run = next(RunDir.all_in(tmp_path / "r"))
    meta = run.read_meta()
    first, second = meta["attempts"]
    assert meta["status"] == "finished" and run.check().ok and first["node"] != second["node"]
    assert second["from_iteration"] >= killed_at > 0  # resumed from what the driver held, not from 0
    assert [r["iteration"] for r in run.read_log()] == [str(i) for i in range(20, 241, 20)]
    assert run_experiments([str(exp)], results=str(tmp_path / "seq"), executor=ExecutorChoice(threads=1), **kw) == 0
    assert logs(tmp_path / "r") == logs(tmp_path / "seq")


HOLD_THE_HEAD = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], include_dashboard=False, configure_logging=False, log_to_driver=False)
head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"])
@ray.remote(num_cpus=1)
class Hold:
    def ready(self):
        return True
h = Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
ray.get(h.ready.remote())
print("holding", flush=True)
sys.stdin.read()
"""


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

    from resnet_exp.runs.executing.ray_executor import probe_storage

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        assert probe_storage(ray, tmp_path, [str(tmp_path)]).shared  # this machine sees itself
        probe = probe_storage(ray, tmp_path, ["/no/such/data"])
        assert not probe.shared and "cannot see /no/such/data" in probe.problems[0]
    finally:
        ray.shutdown()


@pytest.mark.ray
@inside
def test_ctrl_c_with_the_driver_keeping_the_files_checkpoints_every_run(tiny_tar, tmp_path):
    """As with a shared folder (test_executors' pool test): SIGINT to the driver alone; the
    nodes learn of it through the actor that sees the stop file; both runs checkpoint,
    their checkpoints come back, the driver exits 130 without a traceback, and the next
    plan resumes them."""
    from .test_executors import _driver, _Lines

    exp = write_experiment(tmp_path / "long.yaml", """
rows:
  - {model: resnet8, iterations: 100000, milestones: [90000], eval_every: 50000, batch_size: 16}
  - {model: plain8, iterations: 100000, milestones: [90000], eval_every: 50000, batch_size: 16}
""")
    args = ["run", str(exp), "--profile", "smoke", "--data", str(tiny_tar), "--device", "cpu", "--results", "r",
            "--threads", "1", "--executor", "ray", "--ray-storage", "driver", "--cpus-per-run", "0.5"]
    driver = _driver(args, tmp_path)
    lines = _Lines(driver)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:  # both running, as the driver's folder says
        metas = [RunDir(p).read_meta() or {} for p in (tmp_path / "r" / "long").glob("*")]
        if len(metas) == 2 and all(m.get("status") == "running" for m in metas):
            break
        time.sleep(0.05)
    time.sleep(1.0)  # a few iterations in
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=300)
    out = lines.text()
    assert driver.returncode == 130 and "Traceback" not in out, out
    runs = [RunDir(p) for p in (tmp_path / "r" / "long").glob("*")]
    assert len(runs) == 2
    for run in runs:
        meta = run.read_meta()
        assert meta["status"] == "interrupted" and run.check().ok, (meta["status"], out)
        assert run.has_checkpoint() and 0 < meta["iteration"] < 100000
    assert not list((tmp_path / "r" / ".stop").glob("*"))
    plan = subprocess.run([sys.executable, "-m", "resnet_exp", *args, "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300).stdout
    for run in runs:
        assert f"resume at {run.read_meta()['iteration']}" in plan, plan


@pytest.mark.ray
@inside
def test_a_full_disk_on_the_driver_stops_cleanly_and_resumes_exactly(tmp_path, tiny_tar):
    """test_full_disk's test, the runs on Ray with their files coming back to a driver
    whose results folder fills up."""
    from .test_full_disk import test_a_full_disk_stops_cleanly_and_resumes_exactly as full_disk

    full_disk(tmp_path, tiny_tar, ["--executor", "ray", "--ray-storage", "driver", "--cpus-per-run", "0.5"])
