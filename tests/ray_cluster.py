"""Ray test harness: real Ray clusters confined to the loopback address.

Ray (2.5x) rewrites ``127.0.0.1`` to the machine's outward address and its gRPC servers listen on every
interface, whatever ``--node-ip-address`` says. So each scenario runs inside fresh Linux namespaces
(``unshare``: user, network, UTS, mount, PID) whose only network interface is ``lo``: every Ray process
can then bind and reach 127.0.0.1 and nothing else, and ``ray stop --force`` only sees this scenario's
processes (its own PID namespace), so it can never stop another Ray on the machine. When the scenario
ends, the kernel ends whatever is left in its PID namespace: nothing stray survives a failure either.

Run by ``tests/test_ray.py``: ``python tests/ray_cluster.py SPEC.json`` inside the namespaces; the spec
names the mode (``inproc``: ``ray.init`` in the process; ``cluster``: a head and two worker nodes by
``ray start``, the ``spectre reconstruct --ray`` CLI against them, then a worker node killed mid-batch;
``bench``: the throughput ``bench/bench_ray.py`` reports), the clips, the work folder; the scenario
writes ``report.json`` there.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--uts", "--mount", "--pid", "--fork", "--mount-proc",
           "--kill-child"]
HEAD = "127.0.0.1:6379"  # a fixed port is safe: the namespace has its own, otherwise empty, port space


# ----------------------------------------------------------------------------- outside the namespace
def confinement() -> list[str] | None:
    """The ``unshare`` prefix when this machine allows unprivileged namespaces, else None."""
    try:
        ok = subprocess.run([*UNSHARE, "true"], check=False, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return UNSHARE if ok else None


def run_scenario(spec: dict, timeout: float) -> dict:
    """Run one scenario confined to loopback; its report (``timed_out`` when it ran past ``timeout``)."""
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    with open(work / "scenario.log", "wb") as log:
        proc = subprocess.Popen([*UNSHARE, sys.executable, str(Path(__file__).resolve()), str(work / "spec.json")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own process group; --kill-child ends the namespace with it
        proc.wait(30)
    report = work / "report.json"
    data = json.loads(report.read_text()) if report.is_file() else {}
    data.setdefault("timed_out", proc.returncode in (-signal.SIGKILL,) and not report.is_file())
    data["returncode"] = proc.returncode
    data["log_tail"] = (work / "scenario.log").read_text(errors="replace")[-4000:]
    return data


# ----------------------------------------------------------------------------- inside the namespace
def _loopback_only() -> list[str]:
    """Bring ``lo`` up, name the host ``localhost`` (Ray's fallback when it looks for its own address)
    and return the interfaces that exist (``['lo']`` in a fresh network namespace)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))
    socket.sethostname("localhost")
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)


def _listening() -> list[str]:
    """Local addresses of every listening TCP socket in this namespace."""
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A":  # LISTEN
                continue
            hexip, port = f[1].split(":")
            raw = bytes.fromhex(hexip)
            if width == 8:
                ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.append(f"{ip}:{int(port, 16)}")
    return sorted(set(out))


def _env(work: Path) -> dict:
    """Token authentication as Ray documents it: RAY_AUTH_MODE=token on every process, the token in a
    file named by RAY_AUTH_TOKEN_PATH (a fresh random one per scenario, never in the home folder)."""
    token = work / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    env = dict(os.environ)
    (work / "home").mkdir(exist_ok=True)
    # Ray's session folder holds Unix sockets, whose paths must stay under 108 bytes: a short folder
    short = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp" if os.path.isdir("/tmp") else None))
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               RAY_TMPDIR=str(short), HOME=str(work / "home"), RAY_health_check_period_ms="1000",
               RAY_health_check_failure_threshold="3", GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def _procs() -> list[tuple[int, int, int, str]]:
    """(pid, parent, process group, name and command line) of every live process in this PID namespace
    but this one."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            out.append((int(d.name), int(fields[1]), int(fields[2]), f"{(d / 'comm').read_text().strip()} | {cmd}"))
        except (OSError, ValueError):
            continue
    return out


def _reap() -> None:
    """PID 1 of the namespace adopts orphans: collect the ones that exited."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _start_node(args: list[str], env: dict, log: Path, attempts: int = 2) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group; returns once the node reports it is up. Ray
    gives a node 30 s to register: on a busy machine the start is tried once more (after ending the
    failed attempt's processes)."""
    for attempt in range(attempts):
        with open(log, "wb") as fh:
            proc = subprocess.Popen(["ray", "start", "--block", *args], stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and proc.poll() is None:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return proc
            time.sleep(0.3)
        _kill_node(proc)
        if attempt == attempts - 1:
            raise RuntimeError(f"{log.stem} did not come up: {log.read_text(errors='replace')[-1500:]}")
    raise AssertionError("unreachable")


def _cli(clips: list[str], out: Path, env: dict, timeout: float, *run: str, layout: str = "none") -> dict:
    """``spectre reconstruct`` as a user runs it; ``run``: ``--ray ADDRESS`` or ``--workers N`` etc."""
    cmd = [sys.executable, "-m", "spectre", "reconstruct", *clips, "-o", str(out), "--layout", layout, "--quiet",
           *(run or ("--ray", HEAD))]
    t = time.monotonic()
    p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "stderr": p.stderr[-3000:], "seconds": time.monotonic() - t}


HEAD_ARGS = ["--head", "--node-ip-address=127.0.0.1", f"--port={HEAD.split(':')[1]}", "--num-cpus=0",
             "--include-dashboard=false", "--dashboard-host=127.0.0.1", "--disable-usage-stats"]
WORKER_ARGS = [f"--address={HEAD}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]


def _node_processes(node: subprocess.Popen) -> tuple[list[int], bool]:
    """The pids of one node (its ``ray start`` process group, plus the Ray workers its raylet started,
    which lead groups of their own) and whether one of those workers is executing a video (Ray titles a
    busy worker ``ray::<task name>``)."""
    procs = _procs()
    group = [pid for pid, _, g, _ in procs if g == node.pid]
    workers = [(pid, cmd) for pid, parent, _, cmd in procs if parent in group and pid not in group]
    return group + [pid for pid, _ in workers], any("ray::_ray_job" in cmd for _, cmd in workers)


def _kill_node(node: subprocess.Popen) -> int:
    """SIGKILL every process of one node (by pid); how many there were."""
    pids, _ = _node_processes(node)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait(10)
    _reap()
    return len(pids)


def scenario_inproc(spec: dict, work: Path, report: dict) -> None:
    import ray

    from spectre.reconstruct import make_config, run_batch

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        report["node_ips"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
        report["listening"] = _listening()
        t = time.monotonic()
        summary = run_batch(spec["clips"], spec["out"], make_config(layout="none"), ray_address="local")
        report["seconds"] = time.monotonic() - t
        report["statuses"] = [o.status for o in summary.outcomes]
        report["messages"] = [o.message for o in summary.outcomes]
        report["exit_code"] = summary.exit_code
        again = run_batch(spec["clips"], spec["out"], make_config(layout="none"), ray_address="local")
        report["again"] = [o.status for o in again.outcomes]
    finally:
        ray.shutdown()
        subprocess.run(["ray", "stop", "--force"], check=False, capture_output=True, timeout=60)
        time.sleep(0.5)
        _reap()
        report["strays"] = [cmd[:120] for *_, cmd in _procs()]


def scenario_cluster(spec: dict, work: Path, report: dict) -> None:
    env = dict(os.environ)
    nodes: dict[str, subprocess.Popen] = {}
    try:
        t = time.monotonic()
        nodes["head"] = _start_node(HEAD_ARGS, env, work / "head.log")
        for name in ("worker_a", "worker_b"):  # the head has no CPU: every video runs on a worker node
            nodes[name] = _start_node(WORKER_ARGS, env, work / f"{name}.log")
        report["start_seconds"] = time.monotonic() - t
        report["listening"] = _listening()

        # (b) the CLI as a user runs it, against the cluster
        report["cli"] = _cli(spec["clips"], Path(spec["out"]), env, spec.get("step_timeout", 120))

        # no token: refused with a one-line error, before any work
        bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        bare["RAY_NUM_REDIS_GET_RETRIES"] = "2"  # fail fast: the refusal itself is what is tested
        report["no_token"] = _cli(spec["clips"][:1], work / "no_token_out", bare, 60)

        # (c) a worker node killed while it processes a video: the batch still completes
        cmd = [sys.executable, "-m", "spectre", "reconstruct", *spec["clips"], "-o", spec["out_kill"], "--layout",
               "none", "--quiet", "--ray", HEAD]
        t = time.monotonic()
        with open(work / "kill_cli.log", "wb") as fh:
            cli = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        victim = nodes["worker_a"]
        deadline = time.monotonic() + spec.get("step_timeout", 120)
        busy = False
        while time.monotonic() < deadline and cli.poll() is None and not busy:
            time.sleep(0.05)
            _, busy = _node_processes(victim)
        report["killed_mid_job"] = busy and cli.poll() is None
        if report["killed_mid_job"]:
            report["killed"] = _kill_node(victim)  # its `ray start`, raylet, agents and workers
            report["killed_at"] = time.monotonic() - t
        try:
            cli.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            cli.kill()
            cli.wait(10)
        report["kill_cli"] = {"rc": cli.returncode, "seconds": time.monotonic() - t,
                              "stderr": (work / "kill_cli.log").read_text(errors="replace")[-3000:]}
    finally:
        subprocess.run(["ray", "stop", "--force"], check=False, env=env, capture_output=True, timeout=60)
        for proc in nodes.values():
            _kill_node(proc)
        time.sleep(0.5)
        _reap()
        report["strays"] = [cmd[:120] for *_, cmd in _procs()]


def scenario_bench(spec: dict, work: Path, report: dict) -> None:
    """Throughput of the same batch: local ``--workers 1``, then on one and on two worker nodes."""
    env = dict(os.environ)
    clips, layout, timeout = spec["clips"], spec.get("layout", "grid"), spec.get("step_timeout", 600)
    runs = report["runs"] = {}
    nodes: dict[str, subprocess.Popen] = {}
    try:
        runs["local"] = _cli(clips, work / "local", env, timeout, "--workers", "1", layout=layout)
        nodes["head"] = _start_node(HEAD_ARGS, env, work / "head.log")
        for n in range(1, spec.get("max_nodes", 2) + 1):
            nodes[f"worker{n}"] = _start_node(WORKER_ARGS, env, work / f"worker{n}.log")
            runs[f"ray{n}"] = _cli(clips, work / f"ray{n}", env, timeout, "--ray", HEAD, layout=layout)
    finally:
        subprocess.run(["ray", "stop", "--force"], check=False, env=env, capture_output=True, timeout=60)
        for proc in nodes.values():
            _kill_node(proc)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    report: dict = {"interfaces": _loopback_only()}
    try:
        if report["interfaces"] != ["lo"]:
            raise RuntimeError(f"not confined to loopback: interfaces {report['interfaces']}")
        os.environ.update(_env(work))
        {"inproc": scenario_inproc, "cluster": scenario_cluster, "bench": scenario_bench}[spec["mode"]](spec, work, report)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        tmp = os.environ.get("RAY_TMPDIR", "")
        if Path(tmp).name.startswith("sr"):
            shutil.rmtree(tmp, ignore_errors=True)
    (work / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
