#!/usr/bin/env python3
"""A fake SLURM for tests: sbatch, srun, sacct, squeue, sinfo, scontrol, scancel, sacctmgr and
sshare as one script, dispatched on the name it is called by (``install`` makes the links).

Every call is recorded in ``$FAKE_SLURM_DIR/calls.jsonl`` ({"tool", "argv"}); jobs run here, on
this machine, with the environment SLURM would give them (``SLURM_JOB_ID``, ``SLURM_CPUS_PER_TASK``,
``SLURM_MEM_PER_NODE``, ``SLURM_JOB_NODELIST``; per heterogeneous component its ``_HET_GROUP_<n>``
node list). A job asking for GPUs is not run: this machine has none, so it fails as a real one
would on a node without them (its request is still recorded).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

TOOLS = ("sbatch", "srun", "sacct", "squeue", "sinfo", "scontrol", "scancel", "sacctmgr", "sshare")
HOST = "localhost"


def install(bin_dir: Path) -> Path:
    """Links named after the SLURM tools to this script in ``bin_dir``; returns ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    me.chmod(0o755)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(me)
    return bin_dir


def calls(state: Path, tool: str | None = None) -> list[list[str]]:
    """The recorded argv of every call (of ``tool``), in order."""
    path = state / "calls.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["argv"] for r in rows if tool is None or r["tool"] == tool]


# ---------------------------------------------------------------------------- the tools
def _state() -> Path:
    path = Path(os.environ["FAKE_SLURM_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def _record(tool: str, argv: list[str]) -> None:
    with open(_state() / "calls.jsonl", "a") as f:
        f.write(json.dumps({"tool": tool, "argv": argv}) + "\n")


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _job_env(job_id: str, options: list[str], nodelist: str = HOST) -> dict[str, str]:
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOBID=job_id, SLURM_JOB_NODELIST=nodelist,
               SLURM_NNODES="1", SLURM_NODEID="0", SLURM_CPUS_ON_NODE=str(os.cpu_count()))  # fmt: skip
    cpus = _option(options, "--cpus-per-task")
    if cpus:
        env["SLURM_CPUS_PER_TASK"] = cpus
    mem = _option(options, "--mem")
    if mem:
        env["SLURM_MEM_PER_NODE"] = mem
    return env


def _new_job_id() -> str:
    state = _state()
    lock = state / "next_id"
    for _ in range(200):  # a crude lock: sbatch calls may race
        try:
            fd = os.open(state / "id.lock", os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            time.sleep(0.01)
    try:
        job_id = int(lock.read_text()) if lock.exists() else 1000
        lock.write_text(str(job_id + 1))
    finally:
        os.close(fd)
        os.unlink(state / "id.lock")
    return str(job_id)


def _set_job(job_id: str, **fields) -> None:
    path = _state() / "jobs" / f"{job_id}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def sbatch(argv: list[str]) -> int:
    job_id = _new_job_id()
    wrap = _option(argv, "--wrap")
    name = _option(argv, "--job-name") or "job"
    output = (_option(argv, "--output") or f"slurm-{job_id}.out").replace("%j", job_id)
    if wrap is None:
        print("fake sbatch: only --wrap jobs", file=sys.stderr)
        return 1
    if _option(argv, "--gpus") or _option(argv, "--gres"):
        _set_job(job_id, name=name, state="FAILED")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text("fake SLURM: no GPU on this machine\n")
        print(job_id)
        return 0
    _set_job(job_id, name=name, state="RUNNING")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    env = _job_env(job_id, argv)
    runner = [sys.executable, str(Path(__file__).resolve()), "_run", job_id, wrap]
    with open(output, "w") as log:
        proc = subprocess.Popen(runner, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    _set_job(job_id, pid=proc.pid)
    print(job_id)
    return 0


def _run(job_id: str, command: str) -> int:
    code = subprocess.run(["sh", "-c", command], check=False).returncode
    _set_job(job_id, state="COMPLETED" if code == 0 else "FAILED", exit_code=code)
    return code


def _split_components(argv: list[str]) -> list[tuple[list[str], list[str]]]:
    """srun's argv -> [(options, command)] per heterogeneous component (':' between them)."""
    parts, current = [], []
    for a in argv:
        if a == ":":
            parts.append(current)
            current = []
        else:
            current.append(a)
    parts.append(current)
    out = []
    for part in parts:
        i = 0
        while i < len(part) and part[i].startswith("-"):
            i += 1
        out.append((part[:i], part[i:]))
    return out


def srun(argv: list[str]) -> int:
    components = _split_components(argv)
    shared = components[0][0]
    if len(components) == 1 and os.environ.get("SLURM_JOB_ID"):
        # a job step inside an allocation (the jobstep executor's srun -n1 ... snakemake ...)
        command = components[0][1]
        return subprocess.run(shlex.join(command) if len(command) > 1 else command[0],
                              shell=True, check=False).returncode  # fmt: skip
    if any(_option(options, "--gpus") for options, _ in components):
        print("srun: error: fake SLURM: no GPU on this machine", file=sys.stderr)
        return 1
    job_id = _new_job_id()
    _set_job(job_id, name=_option(shared, "--job-name") or "srun", state="RUNNING")
    procs = []
    for options, command in components:
        env = _job_env(job_id, options)
        env["SLURM_HET_SIZE"] = str(len(components))
        for g in range(len(components)):
            env[f"SLURM_JOB_NODELIST_HET_GROUP_{g}"] = HOST
        procs.append(subprocess.Popen(command, env=env, start_new_session=True))
    kill = "--kill-on-bad-exit=1" in shared
    codes: dict[int, int] = {}
    while len(codes) < len(procs):
        for i, p in enumerate(procs):
            if i not in codes and p.poll() is not None:
                codes[i] = p.returncode
                if p.returncode and kill:
                    for q in procs:
                        if q.poll() is None:
                            os.killpg(q.pid, signal.SIGTERM)
        time.sleep(0.1)
    worst = max(codes.values(), key=abs)
    _set_job(job_id, state="COMPLETED" if worst == 0 else "FAILED", exit_code=worst)
    return 0 if worst == 0 else (worst if worst > 0 else 1)


def _jobs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((_state() / "jobs").glob("*.json")):
        try:
            out.append((path.stem, json.loads(path.read_text())))
        except ValueError:
            continue
    return out


# A status query waits (at most this long) until a running job of the run ends. The executor
# plugin backs off by 10 s after each query that sees nothing finish (1 s, 11 s, 21 s, ...), so
# against jobs that take seconds an immediate answer left the run waiting ~30 s per wave of jobs.
# Answering at the change is what a real scheduler's next poll would show; the plugin allows a
# query 60 s.
STATUS_WAIT_s = 30.0


def sacct(argv: list[str]) -> int:
    if "-o" in argv and any(a.startswith("Account") for a in argv):
        print("testaccount")
        return 0
    name = _option(argv, "--name")

    def mine() -> list[tuple[str, dict]]:
        return [(i, d) for i, d in _jobs() if name is None or d.get("name") == name]

    running = {i for i, d in mine() if d["state"] == "RUNNING"}
    deadline = time.monotonic() + STATUS_WAIT_s
    while name is not None and running and time.monotonic() < deadline:
        if any(d["state"] != "RUNNING" for i, d in mine() if i in running):
            break
        time.sleep(0.1)
    for job_id, data in mine():
        print(f"{job_id}|{data['state']}")
    return 0


def squeue(argv: list[str]) -> int:
    return sacct(argv)


def sinfo(argv: list[str]) -> int:
    print("PARTITION\ncpu*\ngpu")
    return 0


def scontrol(argv: list[str]) -> int:
    if argv[:2] == ["show", "config"]:
        print("MaxArraySize            = 1001\nMinJobAge               = 300")
        return 0
    if argv[:2] == ["show", "hostnames"]:
        for host in (argv[2] if len(argv) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")).split(
            ","
        ):
            print(host)
        return 0
    return 0


def scancel(argv: list[str]) -> int:
    for job_id in argv:
        path = _state() / "jobs" / f"{job_id}.json"
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("pid"):
                try:
                    os.killpg(data["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass
            _set_job(job_id, state="CANCELLED")
    return 0


def sacctmgr(argv: list[str]) -> int:
    print("testaccount")
    return 0


def main() -> int:
    tool, argv = Path(sys.argv[0]).name, sys.argv[1:]
    if tool == "fake_slurm.py" and argv[:1] == ["_run"]:
        return _run(argv[1], argv[2])
    _record(tool, argv)
    if tool == "sshare":
        return sacctmgr(argv)
    return globals()[tool](argv)


if __name__ == "__main__":
    sys.exit(main())
