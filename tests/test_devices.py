import pytest

from llmpq.devices import CATALOG, DeviceType, device_type, inline_device_type, measure_cpu
from llmpq.errors import UserError

REQUIRED = ["T4", "P100-12G", "P100-16G", "V100-16G", "V100-32G", "A10", "A100-40G",
            "A100-80G", "A800-80G", "L4", "H100-SXM", "H100-PCIe"]  # fmt: skip


def test_catalog_has_every_required_gpu():
    assert list(CATALOG) == REQUIRED


@pytest.mark.parametrize(
    "name, memory_GiB, bandwidth_GBps, fp16_TFLOPS, int8_TOPS",
    [
        ("T4", 16, 320, 65, 130),
        ("P100-12G", 12, 549, 18.7, None),
        ("V100-32G", 32, 900, 125, None),
        ("A100-40G", 40, 1555, 312, 624),
        ("A100-80G", 80, 2039, 312, 624),
        ("L4", 24, 300, 121, 242),
        ("H100-SXM", 80, 3350, 989, 1979),
        ("H100-PCIe", 80, 2000, 756, 1513),
    ],
)
def test_catalog_figures_match_the_spec_table(
    name, memory_GiB, bandwidth_GBps, fp16_TFLOPS, int8_TOPS
):
    t = CATALOG[name]
    assert (t.memory_GiB, t.bandwidth_GBps, t.fp16_TFLOPS, t.int8_TOPS) == (
        memory_GiB, bandwidth_GBps, fp16_TFLOPS, int8_TOPS,
    )  # fmt: skip
    assert t.memory_bytes == memory_GiB * 1024**3


def test_ridge_batch_matches_peers_table():
    # peers.md §(d): T4 fp16 ridge 203, A100-40G 201, H100-SXM 295 (rounded)
    assert round(CATALOG["T4"].ridge_batch(16)) == 203
    assert round(CATALOG["A100-40G"].ridge_batch(16)) == 201
    assert round(CATALOG["H100-SXM"].ridge_batch(16)) == 295
    assert round(CATALOG["T4"].ridge_batch(4)) == 51


def test_device_type_unknown_names_choices_and_suggests_case():
    with pytest.raises(UserError, match="did you mean 'T4'") as err:
        device_type("t4")
    assert "A100-40G" in str(err.value)
    with pytest.raises(UserError, match="is not a known device type"):
        device_type("RTX9090")


def test_cpu_is_measured_and_positive():
    cpu = measure_cpu()
    assert cpu is device_type("cpu")  # measured once per process
    assert cpu.source == "measured"
    assert cpu.bandwidth_GBps > 0.5 and cpu.fp16_TFLOPS > 0 and cpu.int8_TOPS > 0
    assert cpu.memory_GiB > 0.5


def test_overrides_are_validated_and_marked_inline():
    t4 = CATALOG["T4"].with_overrides({"memory_GiB": 8, "bits": [16, 4]})
    assert t4.memory_GiB == 8 and t4.bits == (4, 16) and t4.source == "inline"
    with pytest.raises(UserError, match="memory_GB"):
        CATALOG["T4"].with_overrides({"memory_GB": 8})
    with pytest.raises(UserError, match="bits"):
        CATALOG["T4"].with_overrides({"bits": [2, 4]})
    with pytest.raises(UserError, match="positive number"):
        CATALOG["T4"].with_overrides({"bandwidth_GBps": -1})


def test_inline_type_needs_the_core_figures():
    t = inline_device_type(
        "RTX4090", {"memory_GiB": 24, "bandwidth_GBps": 1008, "fp16_TFLOPS": 165}
    )
    assert isinstance(t, DeviceType) and t.int8_TOPS is None and t.source == "inline"
    with pytest.raises(UserError, match="fp16_TFLOPS"):
        inline_device_type("X", {"memory_GiB": 24, "bandwidth_GBps": 1008})


def test_to_dict_round_trips_through_overrides():
    data = CATALOG["A10"].to_dict()
    name = data.pop("name")
    data.pop("source")
    assert inline_device_type(name, data).bandwidth_GBps == 600
