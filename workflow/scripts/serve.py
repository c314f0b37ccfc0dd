"""Snakemake script of rule serve: a plan run for real (torchrun, one process per stage)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import no_plan_passed_on, run_logged, serve_by_srun, served_or_exit  # noqa: E402

from llmpq.runtime import serve  # noqa: E402

sm = snakemake  # noqa: F821


def run():
    if no_plan_passed_on(sm.input.plan, sm.output.metrics, sm.output.outputs):
        return
    prompts = sm.input.prompts or None
    if sm.params.launch == "srun":
        source = ["--prompts", prompts] if prompts else ["--synthetic"]
        served_or_exit(lambda: serve_by_srun(sm, [
            *source, "--seed", str(sm.params.seed), "--temperature", str(sm.params.temperature),
            "--group-size", str(sm.params.group_size),
            "--stage-timeout-s", str(sm.params.stage_timeout_s),
        ]))  # fmt: skip
        m = json.loads(Path(sm.output.metrics).read_text())
        print(
            f"served {m['measured']['tokens_per_s']:.1f} tokens/s over {m['num_stages']} stages (srun)"
        )
        return
    result = served_or_exit(lambda: serve(
        sm.input.plan, sm.input.model, prompts, Path(sm.output.metrics).parent,
        cluster=sm.input.cluster, synthetic=prompts is None, seed=sm.params.seed,
        temperature=sm.params.temperature, group_size=sm.params.group_size,
        stage_timeout_s=sm.params.stage_timeout_s,
    ))  # fmt: skip
    m = result.metrics
    print(
        f"served {m.tokens_per_s:.1f} tokens/s (makespan {m.makespan_s:.3f} s, wall {m.wall_s:.1f} s)"
    )


run_logged(sm.log[0], run)
