"""What the outer search enumerates: device orders and micro-batch choices.

Usage::

    from llmpq.planner.candidates import device_orders, order_classes, micro_batches

    orders = device_orders(cluster)                 # distinct orders: identical devices never permuted
    classes = order_classes(problem, orders)        # orders the compact ILP cannot tell apart
    micro_batches(workload, num_devices=4)          # prefill sizes × decode counts

Device orders: every distinct arrangement of the devices, where devices with the same type,
host, memory and cores are identical (swapping two of them gives the same plan). Past
``MAX_ORDERS`` arrangements, devices of one kind stay together and only the kinds are permuted
(the original's enumeration).

Order classes: with layer-uniform costs, the compact ILP of an order depends only on which kind
is first, which is last, and the multiset of (kind, outgoing link) over the positions — so one
ILP per class is exact for layer-uniform ω and a valid bound for layer-specific ω.

Micro-batches: prefill sizes are the divisors of the batch (every prefill micro-batch full);
decode counts ``m_d`` run over 1 … 2N (and at most the batch), one per distinct decode size
``ceil(B / m_d)`` with the smallest count that holds the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import permutations

from llmpq.cluster import Cluster, ClusterDevice
from llmpq.costmodel.comm import link_transfer_ms
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

MAX_ORDERS = 5040


def device_kind(device: ClusterDevice) -> tuple:
    """Devices of one kind are interchangeable."""
    return (device.type.name, device.host, device.memory_bytes, device.cores or 0)


def _distinct_arrangements(kinds: list[tuple], limit: int) -> list[tuple[int, ...]] | None:
    """Distinct permutations of a multiset of kinds as index tuples (lexicographic), or None
    past ``limit``."""
    order = sorted(set(kinds))
    remaining = {k: [i for i, x in enumerate(kinds) if x == k] for k in order}
    out: list[tuple[int, ...]] = []

    def extend(prefix: list[int]) -> bool:
        if len(prefix) == len(kinds):
            out.append(tuple(prefix))
            return len(out) <= limit
        for k in order:
            if remaining[k]:
                i = remaining[k].pop(0)
                ok = extend(prefix + [i])
                remaining[k].insert(0, i)
                if not ok:
                    return False
        return True

    return out if extend([]) else None


def device_orders(cluster: Cluster, limit: int = MAX_ORDERS) -> list[tuple[ClusterDevice, ...]]:
    """Distinct pipeline orders of all devices of ``cluster`` (see the module docstring)."""
    devices = cluster.devices
    kinds = [device_kind(d) for d in devices]
    arrangements = _distinct_arrangements(kinds, limit)
    if arrangements is None:  # too many: keep kinds together, permute the kinds
        groups = {}
        for d, k in zip(devices, kinds, strict=True):
            groups.setdefault(k, []).append(d)
        return [tuple(d for k in perm for d in groups[k]) for perm in permutations(sorted(groups))]
    return [tuple(devices[i] for i in a) for a in arrangements]


def _link_key(cluster: Cluster, a: ClusterDevice, b: ClusterDevice, comm) -> tuple:
    return tuple(round(float(link_transfer_ms(cluster, a, b, s, comm)), 12) for s in (1, 10**6))


def order_signature(cluster: Cluster, order: Sequence[ClusterDevice], comm=None) -> tuple:
    n = len(order)
    hops = sorted(
        (device_kind(order[j]), _link_key(cluster, order[j], order[(j + 1) % n], comm),
         j == 0, j == n - 1)
        for j in range(n)
    )  # fmt: skip
    return (device_kind(order[0]), device_kind(order[-1]), tuple(hops))


def order_classes(
    cluster: Cluster, orders: Sequence[tuple[ClusterDevice, ...]], comm=None
) -> list[list[tuple[ClusterDevice, ...]]]:
    """Orders grouped by signature; classes and members keep the enumeration's order."""
    classes: dict[tuple, list] = {}
    for order in orders:
        classes.setdefault(order_signature(cluster, order, comm), []).append(order)
    return list(classes.values())


def micro_batches(workload: Workload, num_devices: int) -> list[MicroBatch]:
    """Every (prefill size, decode size, decode count) the search tries."""
    b = workload.batch_size
    prefill = [d for d in range(1, b + 1) if b % d == 0]
    decode: dict[int, int] = {}
    for count in range(1, min(b, 2 * num_devices) + 1):
        size = math.ceil(b / count)
        decode.setdefault(size, math.ceil(b / size))
    return [MicroBatch(p, size, count) for p in prefill for size, count in decode.items()]
