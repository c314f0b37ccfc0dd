"""``llmpq serve``: run a plan for real, one process per stage under torchrun."""

from __future__ import annotations

import argparse
import shlex
import sys

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq serve --plan plan.json --model results/models/default --prompts prompts.jsonl \\
      --cluster config/clusters/cpu_hetero.yaml --out results/serve/cpu_hetero
  llmpq serve --plan plan.json --model DIR --synthetic --out results/serve/synthetic
  llmpq serve --plan plan.json --model DIR --prompts p.jsonl --temperature 0.8 --top-p 0.95 \\
      --seed 1 --out out/
  # several nodes: the same command on each, its own --node-rank (node 0 = the host of stage 0,
  # then the hosts of the later stages in pipeline order); --out on a file system all nodes see
  llmpq serve --plan plan.json --model DIR --prompts p.jsonl --cluster cluster.yaml \\
      --out /shared/out --nnodes 2 --node-rank 0 --rdzv-endpoint node-a:29500
  # under SLURM: one heterogeneous srun, a component per host (its own GPUs), node 0's address
  # read when the step starts; the workflow's rule serve_nodes writes this line for you
  srun --nodes=1 --ntasks=1 --gpus=t4:3 sh -c 'exec "$@" --rdzv-endpoint "$(scontrol show \
      hostnames "$SLURM_JOB_NODELIST_HET_GROUP_0" | head -n1):29500"' sh llmpq serve \
      --plan plan.json --model DIR --prompts p.jsonl --cluster cluster.yaml --out /shared/out \
      --nnodes 2 --node-rank 0 : --nodes=1 --ntasks=1 --gpus=v100:1 sh -c '...' sh llmpq serve \
      ... --nnodes 2 --node-rank 1

  # a dataset, resumed after a failure: serves only the ids outputs.jsonl lacks
  llmpq serve --plan plan.json --model DIR --prompts batch.jsonl --out out/ --resume

--prompts serves every request of the file (continuous batching: a slot is refilled as soon as
its sequence ends; --one-batch: the plan's concurrency of requests at a time). Two forms:
  llmpq JSONL: {"id", "prompt" | "token_ids", "max_new_tokens"?, "temperature"?, "top_p"?,
               "seed"?} per line
  OpenAI batch (vLLM run_batch): {"custom_id", "url": "/v1/chat/completions" | "/v1/completions",
               "body": {"messages" | "prompt", "max_tokens", "temperature", ...}} per line
DIR/outputs.jsonl gets one line per request as it finishes, in the input's form ({"id", "text",
"token_ids", "finish_reason", "prompt_tokens"}, or OpenAI batch output lines); DIR/metrics.json
(prompts, generated tokens, makespan_s, tokens_per_s, the plan's prediction, per-stage busy time
and memory) at the end. --synthetic runs one batch of the plan's workload (random ids, end of
sequence ignored) and writes the one-batch metrics (prefill_s, decode_s beside the prediction).
exit codes: 0 done, 1 the run failed (the line names the stage), 2 bad input (the line names the
field, or the prompts file's line).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "serve",
        help="run a plan for real: pipelined generation over torch.distributed",
        description="Start one process per plan stage with torchrun (gloo on CPU, NCCL on "
        "CUDA), each loading only its layers at the plan's bits; prefill and decode in the "
        "plan's micro-batches; write the generated tokens and the measured figures.",
        epilog=EPILOG,
    )
    p.add_argument("--plan", required=True, help="plan JSON (llmpq plan)")
    p.add_argument("--model", required=True, help="local HF checkpoint directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="prompts JSONL")
    src.add_argument("--synthetic", action="store_true",
                     help="the plan's workload of random prompts, end-of-sequence ignored")  # fmt: skip
    p.add_argument("--cluster", help="cluster YAML: per-stage cores and memory budgets")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--gen-len",
        "--max-new-tokens",
        dest="gen_len",
        type=int,
        help="output limit of a request that sets none (default: the plan's gen_len)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="serve only the requests DIR/outputs.jsonl does not answer yet",
    )
    p.add_argument(
        "--one-batch",
        action="store_true",
        help="no refill: the plan's concurrency of requests at a time",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass when sampling")
    p.add_argument("--seed", type=int, default=0, help="sampling and synthetic prompts")
    p.add_argument("--quantized", help="pre-quantized weights for the plan's bits (safetensors)")
    p.add_argument("--group-size", type=int, default=128, help="RTN group for 3/4-bit layers")
    p.add_argument("--stage-timeout-s", type=float, default=30.0,
                   help="a stage silent this long counts as hung: the run fails")  # fmt: skip
    p.add_argument(
        "--nnodes", type=int, help="nodes of a multi-node run: one per host the plan uses"
    )
    p.add_argument("--node-rank", type=int, default=0,
                   help="this node: 0 runs stage 0 and writes the outputs (default 0)")  # fmt: skip
    p.add_argument("--rdzv-endpoint", help="HOST:PORT where the nodes meet (node 0's address)")
    p.add_argument("--rdzv-id", default="llmpq",
                   help="names the run (and its job folder in --out); one per concurrent run")  # fmt: skip
    p.add_argument("--node-addr",
                   help="this node's address the other nodes reach (default: the address of the "
                        "interface that routes to --rdzv-endpoint)")  # fmt: skip
    p.add_argument("--join-timeout-s", type=float, default=60.0,
                   help="how long the nodes wait for each other before the run fails")  # fmt: skip
    p.add_argument("--torchrun-args", default="",
                   help="more torchrun options (one node: they replace --standalone)")  # fmt: skip
    p.add_argument("--launcher", default="torchrun", choices=("torchrun", "threads"),
                   help="threads: all stages in this process (debugging)")  # fmt: skip
    p.add_argument("--ring", default="auto", choices=("auto", "sockets", "dist"),
                   help="how stages pass messages: auto = TCP sockets between CPU stages of one "
                        "host, torch.distributed (gloo/NCCL) otherwise")  # fmt: skip
    p.set_defaults(run=run)


def nodes_of(args: argparse.Namespace):
    """The multi-node flags as :class:`~llmpq.runtime.nodes.Nodes`, or None for one node."""
    from llmpq.errors import UserError
    from llmpq.runtime.nodes import Nodes

    if args.nnodes is None:
        if args.node_rank or args.rdzv_endpoint:
            raise UserError("--nnodes", None, "give --nnodes with --node-rank/--rdzv-endpoint")
        return None
    if args.rdzv_endpoint is None:
        raise UserError("--rdzv-endpoint", None, "give HOST:PORT where the nodes meet")
    nodes = Nodes(args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id,
                  args.join_timeout_s, args.node_addr)  # fmt: skip
    nodes.local_address()  # an endpoint with no route stops here, before any work
    return nodes


def run(args: argparse.Namespace) -> int:
    from llmpq.runtime import ServeFailed, serve

    args.nodes = nodes_of(args)
    if args.prompts:
        return run_dataset(args)
    try:
        result = serve(
            args.plan, args.model, args.prompts, args.out, cluster=args.cluster,
            synthetic=args.synthetic, seed=args.seed, temperature=args.temperature,
            top_p=args.top_p, gen_len=args.gen_len, quantized=args.quantized,
            group_size=args.group_size, launcher=args.launcher, ring=args.ring,
            torchrun_args=shlex.split(args.torchrun_args),
            stage_timeout_s=args.stage_timeout_s, nodes=args.nodes,
        )  # fmt: skip
    except ServeFailed as err:
        print(f"llmpq serve: failed: {err}", file=sys.stderr)
        return 1
    if result.metrics is None:
        print(f"llmpq serve: this node's stages done (outputs on node 0) -> {args.out}")
        return 0
    m = result.metrics
    print(
        f"served {m.batch_size} prompts x {m.gen_len} tokens over {m.num_stages} stages: "
        f"{m.tokens_per_s:.1f} tokens/s (prefill {m.prefill_s:.2f} s, decode {m.decode_s:.2f} s"
        f", wall {m.wall_s:.1f} s) -> {args.out}"
    )
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    from llmpq.runtime import ServeFailed, serve_dataset

    try:
        result = serve_dataset(
            args.plan, args.model, args.prompts, args.out, cluster=args.cluster,
            resume=args.resume, refill=not args.one_batch, max_new_tokens=args.gen_len,
            temperature=args.temperature, top_p=args.top_p, seed=args.seed,
            quantized=args.quantized, group_size=args.group_size, launcher=args.launcher,
            torchrun_args=shlex.split(args.torchrun_args), ring=args.ring,
            stage_timeout_s=args.stage_timeout_s, progress=not args.no_progress,
            nodes=args.nodes,
        )  # fmt: skip
    except ServeFailed as err:
        print(f"llmpq serve: failed: {err} (finished outputs are kept: rerun with --resume)",
              file=sys.stderr)  # fmt: skip
        return 1
    m = result.metrics
    if m is None and args.nodes is not None and args.nodes.rank != 0:
        print(f"llmpq serve: node {args.nodes.rank}'s stages done (node 0 writes the outputs) "
              f"-> {args.out}")  # fmt: skip
        return 0
    if m is None:
        print(f"llmpq serve: nothing left to serve ({result.skipped} already answered) "
              f"-> {args.out}")  # fmt: skip
        return 0
    resumed = f", {result.skipped} already answered" if result.skipped else ""
    print(
        f"served {m.prompts} prompts ({m.generated_tokens} tokens{resumed}) over "
        f"{m.num_stages} stages, {m.concurrency} in flight: {m.tokens_per_s:.1f} tokens/s "
        f"(makespan {m.makespan_s:.2f} s, wall {m.wall_s:.1f} s) -> {args.out}"
    )
    return 0
