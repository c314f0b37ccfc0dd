from pathlib import Path

import pytest

from llmpq.cluster import (
    Cluster,
    INTER_HOST_BANDWIDTH_GBps,
    load_cluster,
    save_cluster,
)
from llmpq.errors import UserError

CONFIG = Path(__file__).resolve().parents[1] / "config" / "clusters"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_counts_expand_with_stable_names(tmp_path):
    c = load_cluster(
        write(
            tmp_path,
            "name: mix\ndevices:\n"
            "  - {type: T4, count: 3, host: a}\n"
            "  - {type: V100-32G, host: b}\n"
            "  - {type: T4, host: b}\n",
        )
    )
    assert [d.name for d in c.devices] == ["t4-0", "t4-1", "t4-2", "v100-32g-0", "t4-3"]
    assert c.hosts == ("a", "b")
    assert c.type_counts() == {"T4": 4, "V100-32G": 1}
    assert c.total_memory_bytes == (4 * 16 + 32) * 1024**3


def test_links_listed_and_defaults(tmp_path):
    c = load_cluster(
        write(
            tmp_path,
            "devices:\n"
            "  - {type: V100-32G, count: 2, host: a}\n"
            "  - {type: T4, host: a}\n"
            "  - {type: A100-40G, host: b}\n"
            "  - {type: A100-40G, host: c}\n"
            "links:\n  - {between: [a, b], bandwidth_GBps: 12.5, latency_ms: 0.02}\n",
        )
    )
    v0, v1, t4, a_b, a_c = c.devices
    assert c.link(v0, a_b).bandwidth_GBps == 12.5 and c.link(a_b, v0).latency_ms == 0.02
    assert c.link(v0, a_c).bandwidth_GBps == INTER_HOST_BANDWIDTH_GBps  # unlisted hosts: 10 GbE
    assert c.link(v0, v1).bandwidth_GBps == 300  # NVLink between same-type SXM GPUs
    assert c.link(v0, t4).bandwidth_GBps == 16  # PCIe otherwise
    # 1 MB over 12.5 GB/s = 0.08 ms, plus 0.02 ms latency
    assert c.link(v0, a_b).transfer_ms(1_000_000) == pytest.approx(0.1)


def test_inline_overrides_and_inline_types(tmp_path):
    c = load_cluster(
        write(
            tmp_path,
            "devices:\n"
            "  - {name: small-cpu, type: cpu, memory_GiB: 0.5, cores: 1}\n"
            "  - {type: RTX4090, memory_GiB: 24, bandwidth_GBps: 1008, fp16_TFLOPS: 165}\n"
            "  - {type: T4, bits: [4, 8, 16]}\n",
        )
    )
    cpu, rtx, t4 = c.devices
    assert cpu.name == "small-cpu" and cpu.memory_bytes == 512 * 1024**2 and cpu.cores == 1
    assert cpu.type.source == "inline"
    assert rtx.type.name == "RTX4090" and rtx.type.int8_TOPS is None
    assert t4.type.bits == (4, 8, 16)


def test_round_trip_keeps_figures(tmp_path):
    c = load_cluster(write(tmp_path, "devices:\n  - {type: T4, count: 2, memory_GiB: 15}\n"))
    save_cluster(c, tmp_path / "copy.yaml")
    again = load_cluster(tmp_path / "copy.yaml")
    assert [d.name for d in again.devices] == ["t4-0", "t4-1"]
    assert again.devices[0].type.memory_GiB == 15 and again.devices[0].type.bandwidth_GBps == 320


@pytest.mark.parametrize(
    "text, needle",
    [
        ("devices: []", "cluster.devices"),
        ("devices:\n  - {type: T5}", "cluster.devices[0].type = 'T5' is not a known device type"),
        ("devices:\n  - {type: T4, count: 0}", "cluster.devices[0].count = 0"),
        ("devices:\n  - {type: T4, count: two}", "cluster.devices[0].count = 'two'"),
        ("devices:\n  - {type: T4, memory_GB: 3}", "memory_GB"),
        ("devices:\n  - {type: X, memory_GiB: 3}", "bandwidth_GBps"),
        ("devices:\n  - {name: a, type: T4}\n  - {name: a, type: T4}", "used twice"),
        ("devices:\n  - T4", "cluster.devices[0]"),
        ("devices:\n  - {count: 2}", "cluster.devices[0].type"),
        ("device:\n  - {type: T4}", "cluster key = 'device'"),
        (
            "devices:\n  - {type: T4, host: a}\nlinks:\n  - {between: [a, z], bandwidth_GBps: 1}",
            "'z'",
        ),
        (
            "devices:\n  - {type: T4, host: a}\nlinks:\n  - {between: [a, a], bandwidth_GBps: 0}",
            "bandwidth_GBps",
        ),
    ],
)
def test_bad_clusters_give_one_clear_line(tmp_path, text, needle):
    with pytest.raises(UserError) as err:
        load_cluster(write(tmp_path, text))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_every_shipped_cluster_loads():
    files = sorted(CONFIG.glob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        cluster = load_cluster(path)
        assert isinstance(cluster, Cluster) and cluster.devices


def test_paper_cluster_3_is_three_t4_and_a_v100():
    c = load_cluster(CONFIG / "paper_03.yaml")
    assert c.type_counts() == {"T4": 3, "V100-32G": 1}
    assert c.total_memory_bytes == 80 * 1024**3  # peers.md §(e.3): ΣMem 80 GB


def test_memory_in_mib(tmp_path):
    c = load_cluster(write(tmp_path, "devices:\n  - {type: cpu, memory_MiB: 10}\n"))
    assert c.devices[0].memory_bytes == 10 * 1024**2
    with pytest.raises(UserError, match="not both"):
        load_cluster(write(tmp_path, "devices:\n  - {type: cpu, memory_MiB: 10, memory_GiB: 1}\n"))
    with pytest.raises(UserError, match="memory_MiB"):
        load_cluster(write(tmp_path, "devices:\n  - {type: cpu, memory_MiB: -1}\n"))


def test_cpu_hetero_cannot_hold_the_default_model_at_16_bits():
    from llmpq.costmodel.memory import stage_memory
    from llmpq.models.spec import ModelSpec
    from llmpq.plan import MicroBatch
    from llmpq.workload import load_workload

    c = load_cluster(CONFIG / "cpu_hetero.yaml")
    assert [d.cores for d in c.devices] == [1, 1]
    # the default model's shape (llmpq.models.default, preset "default")
    spec = ModelSpec(
        name="default", family="llama", model_type="llama", num_layers=6, hidden_size=256,
        num_heads=4, num_kv_heads=2, head_dim=64, ffn_dim=768, vocab_size=4096,
        max_positions=1024, embed_dim=256, tie_word_embeddings=False, qkv_bias=False,
        out_bias=False, mlp_bias=False,
    )  # fmt: skip
    workload = load_workload(CONFIG.parent / "workloads" / "cpu_small.yaml")
    mb = MicroBatch(1, 8, 1)  # the smallest workspace
    big, small = c.devices

    def fits(split: int, bits: int) -> bool:
        first = stage_memory(spec, [bits] * split, workload, mb, is_first=True, is_last=False)
        last = stage_memory(spec, [bits] * (6 - split), workload, mb, is_first=False, is_last=True)
        return first.total_bytes <= big.memory_bytes and last.total_bytes <= small.memory_bytes

    assert not any(fits(split, 16) for split in range(1, 6))
    assert all(any(fits(split, b) for split in range(1, 6)) for b in (3, 4, 8))
