"""A cluster: the devices a plan may use, on which hosts, and the links between hosts.

Usage::

    from llmpq.cluster import load_cluster

    cluster = load_cluster("config/clusters/paper_03.yaml")
    [d.name for d in cluster.devices]        # ['t4-0', 't4-1', 't4-2', 'v100-32g-0']
    cluster.link(cluster.devices[0], cluster.devices[3]).bandwidth_GBps

Cluster YAML (units in key names)::

    name: t4x3-v100
    devices:
      - {type: T4, count: 3, host: node-a}
      - {type: V100-32G, host: node-b}
      - {name: small-cpu, type: cpu, memory_MiB: 512, cores: 1}  # fields here override the catalog
    links:                                                          # optional
      - {between: [node-a, node-b], bandwidth_GBps: 1.25, latency_ms: 0.05}

``memory_MiB`` may stand in for ``memory_GiB`` (small CPU budgets read better in MiB). Devices
given with ``count`` expand to one entry each, named ``<name or type>-<i>``. Links not
listed default to: inside one host, NVLink where both devices are the same type with NVLink,
else the slower PCIe of the two (``INTRA_HOST_LATENCY_ms``); between hosts, 10 Gb Ethernet
(``INTER_HOST_BANDWIDTH_GBps``, ``INTER_HOST_LATENCY_ms``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpq.devices import DeviceType, device_type, device_type_names, inline_device_type
from llmpq.errors import UserError
from llmpq.files import load_yaml_mapping, write_yaml_atomic

INTER_HOST_BANDWIDTH_GBps = 1.25  # 10 GbE
INTER_HOST_LATENCY_ms = 0.05
INTRA_HOST_LATENCY_ms = 0.01
DEFAULT_HOST = "localhost"
DEVICE_KEYS = {"type", "count", "name", "host", "cores"}


@dataclass(frozen=True)
class ClusterDevice:
    """One device of a cluster. ``cores`` is a CPU worker's core share (None: share equally)."""

    name: str
    type: DeviceType
    host: str = DEFAULT_HOST
    cores: int | None = None

    @property
    def memory_bytes(self) -> int:
        return self.type.memory_bytes


@dataclass(frozen=True)
class Link:
    """A link between two hosts (or inside one host when both names are equal)."""

    hosts: tuple[str, str]
    bandwidth_GBps: float
    latency_ms: float

    def transfer_ms(self, size_bytes: int) -> float:
        """Time to send ``size_bytes`` one way: latency + size / bandwidth."""
        return self.latency_ms + size_bytes / (self.bandwidth_GBps * 1e9) * 1e3


@dataclass(frozen=True)
class Cluster:
    name: str
    devices: tuple[ClusterDevice, ...]
    links: tuple[Link, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.devices:
            raise UserError("cluster.devices", [], "list at least one device", "is empty")
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise UserError(
                    "cluster.devices name", device.name, "give each device a unique name",
                    "is used twice",
                )  # fmt: skip
            seen.add(device.name)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.host for d in self.devices))

    @property
    def total_memory_bytes(self) -> int:
        return sum(d.memory_bytes for d in self.devices)

    def device(self, name: str) -> ClusterDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise UserError(
            "device", name, f"use one of {[d.name for d in self.devices]}", "is unknown"
        )

    def type_counts(self) -> dict[str, int]:
        """Devices per type name, in order of first appearance."""
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d.type.name] = counts.get(d.type.name, 0) + 1
        return counts

    def link(self, a: ClusterDevice, b: ClusterDevice) -> Link:
        """The link data from ``a`` to ``b`` crosses: listed in the file, else the default."""
        for link in self.links:
            if set(link.hosts) == {a.host, b.host}:
                return link
        if a.host != b.host:
            return Link((a.host, b.host), INTER_HOST_BANDWIDTH_GBps, INTER_HOST_LATENCY_ms)
        if a.type.name == b.type.name and a.type.nvlink_GBps:
            return Link((a.host, b.host), a.type.nvlink_GBps, INTRA_HOST_LATENCY_ms)
        bandwidth = min(a.type.pcie_GBps, b.type.pcie_GBps)
        return Link((a.host, b.host), bandwidth, INTRA_HOST_LATENCY_ms)

    def _repr_html_(self) -> str:
        """A table of the devices, for a bare notebook cell."""
        from llmpq.html import html_table, mib

        rows = [
            [d.name, d.type.name, d.host, mib(d.memory_bytes), d.type.bandwidth_GBps,
             d.type.fp16_TFLOPS, ", ".join(map(str, d.type.bits))]
            for d in self.devices
        ]  # fmt: skip
        links = "; ".join(
            f"{a}–{b}: {k.bandwidth_GBps} GB/s, {k.latency_ms} ms" for k in self.links
            for a, b in [k.hosts]
        )  # fmt: skip
        caption = f"cluster {self.name}: {len(self.devices)} devices on {len(self.hosts)} host(s)"
        caption += f"; links {links}" if links else ""
        headers = ["device", "type", "host", "memory", "bandwidth GB/s", "fp16 TFLOP/s", "bits"]
        return html_table(headers, rows, caption)

    def to_dict(self) -> dict[str, Any]:
        """The cluster as YAML-ready data, one entry per device with its full figures."""
        devices = []
        for d in self.devices:
            figures = {k: v for k, v in d.type.to_dict().items() if k not in ("name", "source")}
            entry = {"name": d.name, "type": d.type.name, "host": d.host, **figures}
            if d.cores is not None:
                entry["cores"] = d.cores
            devices.append(entry)
        links = [
            {
                "between": list(k.hosts),
                "bandwidth_GBps": k.bandwidth_GBps,
                "latency_ms": k.latency_ms,
            }
            for k in self.links
        ]
        return {"name": self.name, "devices": devices, "links": links}

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_name: str = "cluster") -> Cluster:
        unknown = sorted(set(data) - {"name", "devices", "links"})
        if unknown:
            raise UserError("cluster key", unknown[0], "use name, devices and links", "is unknown")
        raw_devices = data.get("devices")
        if not isinstance(raw_devices, list) or not raw_devices:
            raise UserError(
                "cluster.devices", raw_devices, "give a non-empty list of devices",
                "is not a non-empty list",
            )  # fmt: skip
        devices = _expand_devices(raw_devices)
        hosts = {d.host for d in devices}
        links = tuple(_parse_link(i, raw, hosts) for i, raw in enumerate(data.get("links") or []))
        return cls(name=str(data.get("name", default_name)), devices=devices, links=links)


def _positive_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(field_name, value, "use a positive integer", "is not a positive integer")
    return value


def _positive_number(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UserError(field_name, value, "use a positive number", "is not a positive number")
    return float(value)


def _entry_type(entry: dict[str, Any], where: str) -> DeviceType:
    """The entry's device type: the catalog's with any inline figures overriding it, or a type
    given entirely inline."""
    figures = {k: v for k, v in entry.items() if k not in DEVICE_KEYS}
    if "memory_MiB" in figures:
        if "memory_GiB" in figures:
            raise UserError(
                f"{where}.memory_MiB",
                figures["memory_MiB"],
                "give memory_GiB or memory_MiB, not both",
            )
        figures["memory_GiB"] = (
            _positive_number(figures.pop("memory_MiB"), f"{where}.memory_MiB") / 1024
        )
    type_name = entry.get("type")
    if type_name is None:
        raise UserError(f"{where}.type", None, "name a catalog type or `cpu`", "is missing")
    if str(type_name) not in device_type_names():
        if not figures:
            device_type(str(type_name), field=f"{where}.type")  # raises: unknown type
        return inline_device_type(str(type_name), figures)
    base = device_type(str(type_name), field=f"{where}.type")
    return base.with_overrides(figures) if figures else base


def _expand_devices(raw_devices: list[Any]) -> tuple[ClusterDevice, ...]:
    devices: list[ClusterDevice] = []
    per_prefix: dict[str, int] = {}
    for i, entry in enumerate(raw_devices):
        where = f"cluster.devices[{i}]"
        if not isinstance(entry, dict):
            raise UserError(where, entry, "write each device as a mapping with a `type`")
        dtype = _entry_type(entry, where)
        count = _positive_int(entry.get("count", 1), f"{where}.count")
        cores = entry.get("cores")
        if cores is not None:
            cores = _positive_int(cores, f"{where}.cores")
        host = str(entry.get("host", DEFAULT_HOST))
        prefix = str(entry.get("name") or dtype.name.lower())
        for _ in range(count):
            if "name" in entry and count == 1:
                name = prefix
            else:
                name = f"{prefix}-{per_prefix.get(prefix, 0)}"
                per_prefix[prefix] = per_prefix.get(prefix, 0) + 1
            devices.append(ClusterDevice(name=name, type=dtype, host=host, cores=cores))
    return tuple(devices)


def _parse_link(i: int, raw: Any, hosts: set[str]) -> Link:
    where = f"cluster.links[{i}]"
    if not isinstance(raw, dict):
        raise UserError(where, raw, "write {between: [host-a, host-b], bandwidth_GBps: ...}")
    between = raw.get("between")
    if not isinstance(between, list) or len(between) != 2:
        raise UserError(f"{where}.between", between, "give a list of two host names")
    for host in between:
        if str(host) not in hosts:
            raise UserError(
                f"{where}.between", host, f"use a host of the devices ({sorted(hosts)})",
                "is not a host of any device",
            )  # fmt: skip
    bandwidth = _positive_number(raw.get("bandwidth_GBps"), f"{where}.bandwidth_GBps")
    latency = raw.get("latency_ms", INTER_HOST_LATENCY_ms)
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
        raise UserError(f"{where}.latency_ms", latency, "use a number ≥ 0")
    return Link((str(between[0]), str(between[1])), bandwidth, float(latency))


def load_cluster(path: str | Path) -> Cluster:
    """Read and validate a cluster YAML file (named after the file unless it sets ``name``)."""
    return Cluster.from_dict(load_yaml_mapping(path, "cluster"), default_name=Path(path).stem)


def save_cluster(cluster: Cluster, path: str | Path) -> Path:
    return write_yaml_atomic(path, cluster.to_dict())


def find_cluster_file(name: str, search_dir: str | Path = "config/clusters") -> Path:
    """The cluster YAML in ``search_dir`` whose ``name`` is ``name`` (a plan names its cluster)."""
    directory = Path(search_dir)
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            if load_yaml_mapping(path, "cluster file").get("name") == name:
                return path
        except UserError:
            continue
    raise UserError(
        "cluster", name, f"pass --cluster FILE (no file in {directory} is named {name!r})",
        problem="has no cluster file",
    )  # fmt: skip
