"""Snakemake script of rules plan_perplexity and reference_perplexity: perplexity of a plan's
quantized model (the weights served), or of the 16-bit checkpoint without a plan."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import no_plan_passed_on, run_logged  # noqa: E402

from llmpq.files import write_json_atomic  # noqa: E402
from llmpq.models.spec import model_spec  # noqa: E402
from llmpq.plan import load_plan  # noqa: E402
from llmpq.quality import plan_perplexity  # noqa: E402

sm = snakemake  # noqa: F821


def perplexity():
    stages = None
    if "plan" in sm.input.keys():
        if no_plan_passed_on(sm.input.plan, sm.output.ppl):
            return
        plan = load_plan(sm.input.plan)
        bits, stages = plan.bits_per_layer(), [s.layers for s in plan.stages]
    else:
        bits = [16] * model_spec(sm.input.model).num_layers
    result = plan_perplexity(
        sm.input.model, bits, None, sm.params.method, sm.params.group_size, stage_layers=stages
    )
    write_json_atomic(sm.output.ppl, result.to_dict())
    print(f"perplexity {result.perplexity:.3f} over {result.tokens_evaluated} tokens")


run_logged(sm.log[0], perplexity, threads=sm.threads)
