"""Two nodes as two hosts: each launcher in its own network namespace with its own address on a
veth pair, so nothing can pass over a shared loopback (issue 15). Needs root and ``ip netns``;
skipped with the reason where the machine does not allow it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAIL_WITHIN_s, HANG_DETECT_s, JOIN_s
from test_distributed import PROMPTS
from test_nodes import _finish, _inputs
from test_pipeline import _hf_generate

pytestmark = pytest.mark.slow
PORT = 29511


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def hosts():
    """Two namespaces, ``a`` at 10.77.N.1 and ``b`` at 10.77.N.2, joined by a veth pair."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("network namespaces need root and iproute2's ip")
    tag = f"{os.getpid() % 100000}"
    names = {"a": f"lqa{tag}", "b": f"lqb{tag}"}
    subnet = f"10.77.{os.getpid() % 250}"
    added = _ip("netns", "add", names["a"])
    if added.returncode != 0:
        pytest.skip(f"ip netns add failed: {added.stderr.strip()}")
    try:
        steps = [("netns", "add", names["b"]),
                 ("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")]  # fmt: skip
        for side, n in (("a", 1), ("b", 2)):
            ns, dev = names[side], f"v{side}{tag}"
            steps += [("link", "set", dev, "netns", ns),
                      ("-n", ns, "addr", "add", f"{subnet}.{n}/24", "dev", dev),
                      ("-n", ns, "link", "set", dev, "up"), ("-n", ns, "link", "set", "lo", "up")]  # fmt: skip
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
        yield {
            side: (ns, f"{subnet}.{n}") for (side, ns), n in zip(names.items(), (1, 2), strict=True)
        }
    finally:
        for ns in names.values():
            for pid in _ip("netns", "pids", ns).stdout.split():
                subprocess.run(["kill", "-9", pid], capture_output=True)
            _ip("netns", "del", ns)


def _in(ns: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip


def _serve(ns: str, args: list[str], out: Path, rank: int, endpoint: str, *extra: str):
    return _in(ns, [sys.executable, "-m", "llmpq", "serve", *args, "--out", str(out),
                    "--no-progress", "--nnodes", "2", "--node-rank", str(rank),
                    "--rdzv-endpoint", endpoint, "--join-timeout-s", str(JOIN_s), *extra])  # fmt: skip


def test_two_namespaces_match_hf_generate(hosts, tiny_default, tmp_path):
    (ns_a, addr_a), (ns_b, _) = hosts["a"], hosts["b"]
    _, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "b"])
    out, endpoint = tmp_path / "out", f"{addr_a}:{PORT}"
    prompts = ["--prompts", str(tmp_path / "prompts.jsonl")]
    results = _finish([_serve(ns_b, [*args, *prompts], out, 1, endpoint),
                       _serve(ns_a, [*args, *prompts], out, 0, endpoint)], limit_s=2 * FAIL_WITHIN_s)  # fmt: skip
    assert [r[0] for r in results] == [0, 0], results
    rows = {r["id"]: r for r in map(json.loads, (out / "outputs.jsonl").read_text().splitlines())}
    assert [rows[p.id]["token_ids"] for p in PROMPTS] == _hf_generate(tiny_default, PROMPTS, 8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_stages"] == 2 and all(s["busy_s"] > 0 for s in metrics["stages"])


def test_a_killed_stage_in_the_other_namespace_fails_both_nodes(hosts, tiny_default, tmp_path):
    (ns_a, addr_a), (ns_b, _) = hosts["a"], hosts["b"]
    plan, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "b"], gen_len=16)
    out, endpoint = tmp_path / "out", f"{addr_a}:{PORT + 1}"
    node0 = ("from llmpq.runtime import serve; from llmpq.runtime.job import Fault; "
             "from llmpq.runtime.nodes import Nodes; import sys; "
             f"serve({str(tmp_path / 'plan.json')!r}, {str(tiny_default)!r}, None, {str(out)!r}, "
             f"synthetic=True, cluster={str(tmp_path / 'cluster.yaml')!r}, stage_timeout_s={HANG_DETECT_s}, "
             "fault=Fault(stage=1, action='kill', after_sends=4), "
             f"nodes=Nodes(2, 0, {endpoint!r}, join_timeout_s={JOIN_s}))")  # fmt: skip
    start = time.monotonic()
    procs = [_serve(ns_b, [*args, "--synthetic"], out, 1, endpoint),
             _in(ns_a, [sys.executable, "-c", node0])]  # fmt: skip
    (code_b, _, err_b), (code_a, _, err_a) = _finish(procs, limit_s=2 * FAIL_WITHIN_s)
    assert code_a != 0 and "stage 1 (cpu-1 on b, layers [1, 2)) died or hung" in err_a, err_a
    assert code_b != 0 and "stage 1" in err_b, err_b
    assert time.monotonic() - start < FAIL_WITHIN_s
    assert not (out / "metrics.json").exists()
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_node_that_never_joins_across_namespaces_is_named(hosts, tiny_default, tmp_path):
    ns_a, addr_a = hosts["a"]
    _, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "b"])
    start = time.monotonic()
    proc = _serve(ns_a, [*args, "--synthetic"], tmp_path / "out", 0, f"{addr_a}:{PORT + 2}",
                  "--join-timeout-s", "5")  # fmt: skip
    ((code, _, err),) = _finish([proc], limit_s=2 * FAIL_WITHIN_s)
    assert code == 1 and time.monotonic() - start < FAIL_WITHIN_s
    assert "node 1 (b: stages 1) never joined the rendezvous" in err, err
