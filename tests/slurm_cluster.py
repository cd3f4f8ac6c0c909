"""A real one-node Slurm cluster (munged, slurmctld, slurmd) in a temporary folder, for the batch tests.

Debian's slurmctld, slurmd, slurm-client and munge (scripts/setup.sh --tests installs them); no systemd: each daemon
runs in the foreground as a child of the test and is stopped by PID. Ports are picked free, so a cluster the
machine may already run is left alone; daemons talk over loopback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


def available() -> bool:
    return all(shutil.which(name) or Path("/usr/sbin", name).exists() for name in DAEMONS)


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> str:
    detected = subprocess.run([_exe("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    return detected.splitlines()[0]  # NodeName=... CPUs=... RealMemory=...


@contextlib.contextmanager
def one_node_cluster(folder: Path, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start the cluster; yield the environment (SLURM_CONF) for its clients; stop it."""
    folder = Path(folder)
    for sub in ("munge", "state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o755)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = folder / "munge" / "munge.socket"
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=deface-ts-test",
        f"SlurmctldHost={host}(127.0.0.1)",  # loopback only, whatever the host name resolves to
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/builtin",
        "ReturnToService=2",
        "MpiDefault=none",
        "MinJobAge=3600",
        "JobCompType=jobcomp/none",
        f"{_node_line()} NodeAddr=127.0.0.1 State=UNKNOWN",
        "PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    processes: list[subprocess.Popen] = []
    try:
        processes.append(subprocess.Popen(
            [_exe("munged"), "-F", "-f", f"--socket={munge_socket}", f"--key-file={key}",
             f"--pid-file={folder / 'munge' / 'munged.pid'}", f"--log-file={folder / 'log' / 'munged.log'}",
             f"--seed-file={folder / 'munge' / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: munge_socket.exists(), timeout, "munged socket", folder)
        for daemon in ("slurmctld", "slurmd"):
            processes.append(subprocess.Popen([_exe(daemon), "-D", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: _node_idle(env), timeout, "an idle Slurm node", folder)
        yield env
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _node_idle(env: dict[str, str]) -> bool:
    done = subprocess.run([_exe("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip().startswith("idle")


def _wait(ready, timeout: float, what: str, folder: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((folder / "log").glob("*.log")))
    raise RuntimeError(f"test Slurm cluster: no {what} after {timeout:.0f} s\n{logs}")


def wait_for_job(job: str, env: dict[str, str], timeout: float = 300.0) -> dict[str, dict[str, str]]:
    """Wait until every task of ``job`` has ended; return scontrol's fields per task (JobId=..._N)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = subprocess.run([_exe("scontrol"), "-o", "show", "job", job], env=env, capture_output=True, text=True)
        tasks = {}
        for line in done.stdout.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            tasks[fields.get("ArrayTaskId", fields.get("JobId", "?"))] = fields
        if tasks and all(f.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")
                         for f in tasks.values()):
            return tasks
        time.sleep(1.0)
    raise RuntimeError(f"Slurm job {job} did not end within {timeout:.0f} s")
