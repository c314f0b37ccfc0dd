"""Snakemake script of rule serve_dataset: every request served (torchrun, one process per
stage), outputs appended as they finish."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import no_plan_passed_on, run_logged, serve_by_srun, served_or_exit  # noqa: E402

from llmpq.runtime import serve_dataset  # noqa: E402

sm = snakemake  # noqa: F821


def run():
    if no_plan_passed_on(sm.input.plan, sm.output.metrics, sm.output.outputs):
        return
    if sm.params.launch == "srun":
        served_or_exit(lambda: serve_by_srun(sm, [
            "--prompts", sm.input.prompts, "--max-new-tokens", str(sm.params.max_new_tokens),
            "--seed", str(sm.params.seed), "--temperature", str(sm.params.temperature),
            "--group-size", str(sm.params.group_size),
            "--stage-timeout-s", str(sm.params.stage_timeout_s),
        ]))  # fmt: skip
        m = json.loads(Path(sm.output.metrics).read_text())
        print(f"served {m['prompts']} prompts, {m['tokens_per_s']:.1f} tokens/s (srun)")
        return
    result = served_or_exit(lambda: serve_dataset(
        sm.input.plan, sm.input.model, sm.input.prompts, Path(sm.output.metrics).parent,
        cluster=sm.input.cluster, max_new_tokens=sm.params.max_new_tokens,
        seed=sm.params.seed, temperature=sm.params.temperature,
        group_size=sm.params.group_size, stage_timeout_s=sm.params.stage_timeout_s,
        progress=False,
    ))  # fmt: skip
    m = result.metrics
    print(f"served {m.prompts} prompts, {m.generated_tokens} tokens: {m.tokens_per_s:.1f} "
          f"tokens/s (makespan {m.makespan_s:.1f} s, {m.concurrency} in flight)")  # fmt: skip


run_logged(sm.log[0], run)
