"""CostModel: roofline when no table exists, a measured table overrides it, the planner's API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmpq.costmodel import CostModel, cost_table_path, roofline_table, save_cost_table
from llmpq.devices import device_type
from llmpq.errors import UserError
from llmpq.models.spec import model_spec
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

SPEC = model_spec("opt-13b")


def test_roofline_without_a_table_and_a_measured_table_overrides(tmp_path: Path) -> None:
    roof = CostModel.for_device("T4", SPEC, costs_dir=tmp_path)
    assert roof.source == "roofline" and "datasheet" in roof.origin
    # a "measured" table for T4 (here: the V100 roofline, relabelled) takes precedence
    measured = roofline_table(SPEC, device_type("V100-32G"), batch=(1, 8, 32), seq=(128, 512))
    measured = measured.assign_attrs(source="measured", device_type="T4")
    path = save_cost_table(measured, cost_table_path(tmp_path, "T4", SPEC.name))
    cm = CostModel.for_device("T4", SPEC, costs_dir=tmp_path)
    assert cm.source == "measured" and cm.origin == str(path)
    assert cm.decode_layer_ms(16, 8, 512) < roof.decode_layer_ms(16, 8, 512)


def test_the_planner_api() -> None:
    cm = CostModel.for_device("A100-40G", SPEC, costs_dir=None)
    assert cm.bits == (3, 4, 8, 16) and cm.memory_bytes == device_type("A100-40G").memory_bytes
    prefill = cm.prefill_layer_ms(4, 8, 512)
    assert isinstance(prefill, float) and prefill > cm.decode_layer_ms(4, 8, 512) > 0
    contexts = np.arange(512, 612)
    per_step = cm.decode_layer_ms(4, 8, contexts)
    assert per_step.shape == (100,) and (np.diff(per_step) >= 0).all()
    assert cm.decode_steps_ms(4, 8, 512, 100) == pytest.approx(per_step.sum())
    assert cm.prepost_ms("decode", 8, 512) == pytest.approx(
        cm.embed_ms("decode", 8, 512) + cm.head_ms("decode", 8, 512)
    )
    assert cm.stage_overhead_ms("prefill", 8, 512) > 0
    mem = cm.stage_memory([4] * 10, Workload(32, 512, 100), MicroBatch(8, 16, 2),
                          is_first=True, is_last=False)  # fmt: skip
    assert 0 < mem.total_bytes < cm.memory_bytes


def test_a_table_for_another_model_is_refused(tmp_path: Path) -> None:
    path = save_cost_table(roofline_table(SPEC, device_type("L4"), batch=(1,), seq=(64,)),
                           tmp_path / "l4.nc")  # fmt: skip
    with pytest.raises(UserError, match="another model shape"):
        CostModel.load(path, spec=model_spec("opt-30b"))
    with pytest.raises(UserError, match="device type 'L4', not 'T4'"):
        CostModel.load(path, device_type="T4")
