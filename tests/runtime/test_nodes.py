"""Several nodes on loopback: each "node" its own ``llmpq serve`` launcher (its own torchrun
agent), as on a real cluster; the stages placed by the cluster file's hosts (issue 15)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from conftest import FAIL_WITHIN_s, HANG_DETECT_s, JOIN_s, generated, make_plan
from test_distributed import PROMPTS
from test_pipeline import _hf_generate

from llmpq.cluster import Cluster
from llmpq.errors import UserError
from llmpq.plan import Plan, Stage, save_plan
from llmpq.runtime import ServeFailed, serve
from llmpq.runtime.job import Fault
from llmpq.runtime.nodes import Nodes, interface_of, node_env, node_layout, torchrun_args
from llmpq.runtime.prompts import generation_ids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(tmp_path, model_dir, splits, hosts, mb=(1, 3, 1), gen_len=8, types=None):
    plan = make_plan(model_dir, splits, mb, gen_len=gen_len)
    if types:
        plan = Plan(plan.model_id, plan.model_shape, plan.workload, plan.method,
                    tuple(Stage(s.device, t, s.layers, s.bits)
                          for s, t in zip(plan.stages, types, strict=True)), plan.micro_batch)  # fmt: skip
    save_plan(plan, tmp_path / "plan.json")
    devices = [{"name": s.device, "type": s.device_type, "host": h,
                **({"memory_MiB": 256, "cores": 1} if s.device_type == "cpu" else {"memory_GiB": 16})}
               for s, h in zip(plan.stages, hosts, strict=True)]  # fmt: skip
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"name": "nodes", "devices": devices}))
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n" for p in PROMPTS)
    )
    return plan, ["--plan", str(tmp_path / "plan.json"), "--model", str(model_dir),
                  "--cluster", str(tmp_path / "cluster.yaml")]  # fmt: skip


def _node(args, out, nnodes, rank, port, *extra):
    cmd = [sys.executable, "-m", "llmpq", "serve", *args, "--out", str(out), "--no-progress",
           "--nnodes", str(nnodes), "--node-rank", str(rank), "--rdzv-endpoint",
           f"127.0.0.1:{port}", "--join-timeout-s", str(JOIN_s), *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip


def _finish(procs, limit_s=240):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=limit_s)
        out.append((p.returncode, stdout, stderr))
    return out


def _all_succeeded(results) -> None:
    """Every node exited 0; else the failing nodes' stderr (its end), not a truncated repr."""
    failed = [f"node exit {code}: {err[-3000:]}" for code, _, err in results if code != 0]
    assert not failed, "\n".join(failed)


# ----------------------------------------------------------------------------- the layout
def _cluster(hosts):
    return Cluster.from_dict({"name": "c", "devices": [
        {"name": f"cpu-{i}", "type": "cpu", "memory_MiB": 64, "host": h}
        for i, h in enumerate(hosts)]})  # fmt: skip


def test_layout_follows_the_hosts_in_pipeline_order(tiny_families):
    tiny, _ = tiny_families["llama-gqa"]
    plan = make_plan(tiny.path, [(0, 1), (1, 2), (2, 3), (3, 4)], (1, 3, 1))
    layout = node_layout(plan, _cluster(["b", "b", "a", "b"]), 2)  # uneven, and b again
    assert layout.hosts == ("b", "a") and layout.stages == ((0, 1, 3), (2,))
    assert layout.host_of(2) == "a"
    args = torchrun_args(Nodes(2, 1, "127.0.0.1:29500"), layout)
    assert args[args.index("--nproc-per-node") + 1] == "1"
    assert args[args.index("--rdzv-backend") + 1] == "c10d"
    assert args[args.index("--rdzv-conf") + 1].endswith("is_host=0")  # only node 0 hosts the store
    assert args[args.index("--local-addr") + 1] == "127.0.0.1"  # not the hostname: see nodes.py
    with pytest.raises(UserError, match=r"--nnodes = 3 .*--nnodes 2"):
        node_layout(plan, _cluster(["b", "b", "a", "b"]), 3)
    with pytest.raises(UserError, match="--cluster"):
        node_layout(plan, None, 2)
    for bad, field in [((2, 2, "h:1"), "--node-rank"), ((0, 0, "h:1"), "--nnodes"),
                       ((2, 0, "h"), "--rdzv-endpoint"), ((2, 0, "h:99999"), "--rdzv-endpoint")]:  # fmt: skip
        with pytest.raises(UserError, match=field):
            Nodes(*bad)


def test_each_node_is_reached_at_the_address_that_routes_to_the_endpoint():
    assert Nodes(2, 1, "127.0.0.1:29500").local_address() == "127.0.0.1"
    assert Nodes(2, 1, "127.0.0.1:29500", address="10.9.9.9").local_address() == "10.9.9.9"
    assert interface_of("127.0.0.1") == "lo" and interface_of("192.0.2.77") is None
    assert node_env(Nodes(2, 1, "127.0.0.1:29500")) in ({"GLOO_SOCKET_IFNAME": "lo"}, {})
    with pytest.raises(UserError, match="--node-addr"):
        Nodes(2, 1, "no-such-host.invalid:29500").local_address()


# ------------------------------------------------------------------------ real launchers
@pytest.mark.slow
def test_two_and_three_nodes_match_hf_generate(tiny_families, tiny_default, tmp_path):
    # two nodes, uneven (2 + 1 stages): node 1 started first, as users do
    _, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 1), (1, 2)], ["a", "a", "b"])
    out, port = tmp_path / "out2", _free_port()
    prompts = ["--prompts", str(tmp_path / "prompts.jsonl")]
    results = _finish([_node([*args, *prompts], out, 2, 1, port),
                       _node([*args, *prompts], out, 2, 0, port)])  # fmt: skip
    _all_succeeded(results)
    assert "node 1's stages done" in results[0][1]
    rows = {r["id"]: r for r in map(json.loads, (out / "outputs.jsonl").read_text().splitlines())}
    assert [rows[p.id]["token_ids"] for p in PROMPTS] == _hf_generate(tiny_default, PROMPTS, 8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_stages"] == 3 and all(s["busy_s"] > 0 for s in metrics["stages"])
    assert not list(out.glob(".serve-llmpq*"))  # the job folder and node marks gone after success

    # three nodes, one stage each, one batch (--synthetic is the one-batch path too)
    tiny, hf_tokens = tiny_families["llama-gqa"]
    d3 = tmp_path / "three"
    d3.mkdir()
    _, args = _inputs(d3, tiny.path, [(0, 1), (1, 3), (3, 4)], ["x", "y", "z"], mb=(3, 3, 1))
    out, port = d3 / "out", _free_port()
    ids = [{"id": str(i), "token_ids": row[m.bool()].tolist()}
           for i, (row, m) in enumerate(zip(tiny.ids, tiny.mask, strict=True))]  # fmt: skip
    (d3 / "ids.jsonl").write_text("".join(json.dumps(x) + "\n" for x in ids))
    prompts = ["--prompts", str(d3 / "ids.jsonl"), "--one-batch"]
    results = _finish([_node([*args, *prompts], out, 3, r, port) for r in (2, 1, 0)])
    _all_succeeded(results)
    rows = {r["id"]: r for r in map(json.loads, (out / "outputs.jsonl").read_text().splitlines())}
    want = generated(hf_tokens, tiny.ids.shape[1], generation_ids(tiny.path)[0])
    assert [rows[str(i)]["token_ids"] for i in range(len(ids))] == want
    assert json.loads((out / "metrics.json").read_text())["num_stages"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("action", ["kill", "hang"])
def test_a_dead_or_hung_remote_stage_fails_every_node_naming_it(tiny_default, tmp_path, action):
    plan, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "b"], gen_len=16)
    port = _free_port()
    other = _node([*args, "--synthetic"], tmp_path / "out", 2, 1, port)
    start = time.monotonic()
    with pytest.raises(ServeFailed, match=r"stage 1 \(cpu-1 on b, layers \[1, 2\)\) died or hung"):
        serve(plan, tiny_default, None, tmp_path / "out", synthetic=True, cluster=tmp_path /
              "cluster.yaml", stage_timeout_s=HANG_DETECT_s, fault=Fault(stage=1, action=action, after_sends=4),
              nodes=Nodes(2, 0, f"127.0.0.1:{port}", join_timeout_s=JOIN_s))  # fmt: skip
    ((code, _, err),) = _finish([other])
    assert code != 0 and "stage 1" in err
    assert time.monotonic() - start < FAIL_WITHIN_s
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == ""
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_a_node_that_never_joins_is_named(tiny_default, tmp_path, capsys):
    from llmpq.cli import main

    _, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "b"])
    start = time.monotonic()
    code = main(["serve", *args, "--synthetic", "--out", str(tmp_path / "out"), "--nnodes", "2",
                 "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--join-timeout-s", "5"])  # fmt: skip
    assert code == 1 and time.monotonic() - start < FAIL_WITHIN_s
    err = capsys.readouterr().err
    assert "node 1 (b: stages 1) never joined the rendezvous" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_stage_on_the_wrong_device_type_is_one_line(tiny_default, tmp_path, capsys):
    from llmpq.cli import main

    _, args = _inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], ["a", "a"], types=["cpu", "T4"])
    code = main(["serve", *args, "--synthetic", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "stage 1 (cpu-1 on a" in err and "needs a GPU" in err and "T4" in err
