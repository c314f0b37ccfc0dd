import json
from pathlib import Path

import pytest

from llmpq.cluster import load_cluster
from llmpq.errors import UserError
from llmpq.models.spec import NAMED_SHAPES
from llmpq.plan import (
    IdleDevice,
    MicroBatch,
    Plan,
    Prediction,
    SolverReport,
    Stage,
    load_plan,
    save_plan,
)
from llmpq.workload import Workload

CLUSTERS = Path(__file__).resolve().parents[1] / "config" / "clusters"


def make_plan(**overrides) -> Plan:
    spec = NAMED_SHAPES["opt-30b"]  # 48 layers
    fields = dict(
        model_id="opt-30b",
        model_shape=spec,
        workload=Workload(32, 512, 100),
        method="llmpq",
        cluster="paper-03",
        stages=(
            Stage("t4-0", "T4", (0, 10), (4,) * 10),
            Stage("t4-1", "T4", (10, 20), (4,) * 10),
            Stage("t4-2", "T4", (20, 30), (3,) * 10),
            Stage("v100-32g-0", "V100-32G", (30, 48), (8,) * 18),
        ),
        micro_batch=MicroBatch(prefill_size=4, decode_size=8, decode_count=4),
        predicted=Prediction(1.0, 2.0, 3.0, 1066.7, {"t4-0": 10}),
        solver=SolverReport("CBC", "OPTIMAL", 3.0, 2.9, 0.03, 1.5),
    )
    fields.update(overrides)
    return Plan(**fields)


def test_round_trip_and_bits(tmp_path):
    plan = make_plan()
    save_plan(plan, tmp_path / "plan.json")
    again = load_plan(tmp_path / "plan.json")
    assert again == plan
    assert again.bits_per_layer() == [4] * 20 + [3] * 10 + [8] * 18
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["schema_version"] == 1 and data["stages"][0]["layers"] == [0, 10]
    assert data["quality"] is None


def test_idle_devices_and_the_search_space_round_trip_and_show(tmp_path):
    plan = make_plan(
        stages=(Stage("v100-32g-0", "V100-32G", (0, 48), (4,) * 48),),
        solver=SolverReport("CBC", "OPTIMAL", 3.0, 2.9, 0.03, 1.5, "every ordered subset"),
        idle_devices=tuple(IdleDevice(f"t4-{i}", "slower by the bound") for i in range(3)),
    )
    again = load_plan(save_plan(plan, tmp_path / "plan.json"))
    assert again == plan and again.solver.space == "every ordered subset"
    assert "t4-2 idle: slower by the bound" in again._repr_html_()
    data = json.loads((tmp_path / "plan.json").read_text())
    data["idle_devices"] = "t4-0"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="plan.idle_devices .* is not a list"):
        load_plan(tmp_path / "bad.json")
    data["idle_devices"] = [{"device": "t4-0"}]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"plan.idle_devices\[0\]"):
        load_plan(tmp_path / "bad.json")


def test_matches_paper_cluster_3():
    make_plan().check_against(load_cluster(CLUSTERS / "paper_03.yaml"))


@pytest.mark.parametrize(
    "stages, needle",
    [
        ((Stage("a", "T4", (0, 10), (4,) * 10), Stage("b", "T4", (11, 48), (4,) * 37)), "gap"),
        ((Stage("a", "T4", (0, 10), (4,) * 10),), "do not cover"),
        ((Stage("a", "T4", (0, 48), (4,) * 47),), "does not match the layer count"),
        ((Stage("a", "T4", (0, 48), (5,) * 48),), "plan.stages[0].bits = 5"),
        ((), "plan.stages"),
    ],
)
def test_bad_stages(stages, needle):
    with pytest.raises(UserError) as err:
        make_plan(stages=stages)
    assert needle in str(err.value)


def test_micro_batches_must_hold_the_batch():
    with pytest.raises(UserError, match="too small"):
        make_plan(micro_batch=MicroBatch(4, 8, 3))
    with pytest.raises(UserError, match="decode_size"):
        make_plan(micro_batch=MicroBatch(4, 0, 3))


def test_check_against_a_cluster_names_the_problem():
    cluster = load_cluster(CLUSTERS / "paper_03.yaml")
    wrong_type = make_plan(stages=(Stage("t4-0", "V100-32G", (0, 48), (4,) * 48),))
    with pytest.raises(UserError, match="does not match the cluster"):
        wrong_type.check_against(cluster)
    unknown = make_plan(stages=(Stage("t4-9", "T4", (0, 48), (4,) * 48),))
    with pytest.raises(UserError, match="t4-9"):
        unknown.check_against(cluster)
    twice = make_plan(
        stages=(Stage("t4-0", "T4", (0, 8), (4,) * 8), Stage("t4-0", "T4", (8, 48), (4,) * 40))
    )
    with pytest.raises(UserError, match="holds two stages"):
        twice.check_against(cluster)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_plan(tmp_path / "none.json")
    (tmp_path / "p.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_plan(tmp_path / "p.json")
    data = make_plan().to_dict()
    (tmp_path / "p.json").write_text(json.dumps({**data, "schema_version": 7}))
    with pytest.raises(UserError, match="schema_version"):
        load_plan(tmp_path / "p.json")
    del data["micro_batch"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="micro_batch"):
        load_plan(tmp_path / "p.json")
    data = make_plan().to_dict()
    data["stages"][0]["layers"] = [0, "10"]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="layers"):
        load_plan(tmp_path / "p.json")
