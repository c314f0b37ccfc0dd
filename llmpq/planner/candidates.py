"""What the outer search enumerates: device orders over device subsets, and micro-batches.

Usage::

    from llmpq.planner.candidates import device_orders, order_classes, micro_batches

    orders, space = device_orders(cluster)     # every ordered subset; identical devices never permuted
    classes = order_classes(cluster, orders)   # orders the compact ILP cannot tell apart
    micro_batches(workload, num_devices=4)     # prefill sizes × decode counts

Device orders: a plan uses a nonempty subset of the devices, in some pipeline order, every
used device holding at least one layer; so the orders are every distinct arrangement of every
nonempty sub-multiset of the devices (single devices included), where devices with the same
type, host, memory and cores are identical (swapping two of them gives the same plan; of ``c``
identical devices a subset uses the first). Past ``MAX_ORDERS`` arrangements, devices of one
kind stay together and only the kinds are permuted (the original's enumeration), and past that
too, each kind is used wholly or not at all; ``space`` says which (the plan's solver report
carries it: the certificate is over that space).

Order classes: with layer-uniform costs, the compact ILP of an order depends only on the
multiset of (kind, outgoing link, is first, is last) over its positions — so one ILP per class
is exact for layer-uniform ω and a valid bound for layer-specific ω.

Micro-batches: prefill sizes are the divisors of the batch (every prefill micro-batch full);
decode counts ``m_d`` run over 1 … 2N (and at most the batch), one per distinct decode size
``ceil(B / m_d)`` with the smallest count that holds the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import permutations, product

from llmpq.cluster import Cluster, ClusterDevice
from llmpq.costmodel.comm import link_transfer_ms
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

MAX_ORDERS = 5040


def device_kind(device: ClusterDevice) -> tuple:
    """Devices of one kind are interchangeable."""
    return (device.type.name, device.host, device.memory_bytes, device.cores or 0)


SPACES = ("every ordered subset of the devices", "kinds kept together",
          "kinds kept together, each used wholly or not at all")  # fmt: skip


def _arrangements(kinds: Sequence[tuple], limit: int) -> list[tuple[int, ...]] | None:
    """Distinct permutations of a multiset of kinds as index tuples (lexicographic by kind),
    or None past ``limit``."""
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


def _subset_counts(sizes: Sequence[int], wholly: bool, max_devices: int) -> list[tuple[int, ...]]:
    """Devices used per kind: every nonempty choice, the larger subsets first."""
    choices = [(0, n) if wholly else tuple(range(n + 1)) for n in sizes]
    out = [c for c in product(*choices) if 0 < sum(c) <= max_devices]
    return sorted(out, key=lambda c: (-sum(c), tuple(-x for x in c)))


def device_orders(
    cluster: Cluster, limit: int = MAX_ORDERS, devices: Sequence[ClusterDevice] | None = None,
    max_devices: int | None = None,
) -> tuple[list[tuple[ClusterDevice, ...]], str]:  # fmt: skip
    """Distinct pipeline orders over the nonempty subsets of ``devices`` (default: the
    cluster's) of at most ``max_devices`` devices, and the space they span (module docstring)."""
    devices = list(cluster.devices if devices is None else devices)
    groups: dict[tuple, list[ClusterDevice]] = {}
    for d in devices:
        groups.setdefault(device_kind(d), []).append(d)
    kinds = sorted(groups)
    top = len(devices) if max_devices is None else max_devices
    orders: list[tuple[ClusterDevice, ...]] = []
    for counts in _subset_counts([len(groups[k]) for k in kinds], False, top):
        chosen = [d for k, c in zip(kinds, counts, strict=True) for d in groups[k][:c]]
        found = _arrangements([device_kind(d) for d in chosen], limit - len(orders))
        if found is None:
            break
        orders += [tuple(chosen[i] for i in a) for a in found]
    else:
        return orders, SPACES[0]
    for space, wholly in ((SPACES[1], False), (SPACES[2], True)):
        orders = []
        for counts in _subset_counts([len(groups[k]) for k in kinds], wholly, top):
            used = [k for k, c in zip(kinds, counts, strict=True) if c]
            take = dict(zip(kinds, counts, strict=True))
            orders += [tuple(d for k in perm for d in groups[k][: take[k]])
                       for perm in permutations(used)]  # fmt: skip
            if len(orders) > limit and not wholly:
                break
        else:
            return orders, space
    raise AssertionError("unreachable")


def _link_key(cluster: Cluster, a: ClusterDevice, b: ClusterDevice, comm) -> tuple:
    return tuple(round(float(link_transfer_ms(cluster, a, b, s, comm)), 12) for s in (1, 10**6))


def order_signature(cluster: Cluster, order: Sequence[ClusterDevice], comm=None) -> tuple:
    """The multiset of (kind, outgoing link, is first, is last) over the positions."""
    n = len(order)
    return tuple(sorted(
        (device_kind(order[j]), _link_key(cluster, order[j], order[(j + 1) % n], comm),
         j == 0, j == n - 1)
        for j in range(n)
    ))  # fmt: skip


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
