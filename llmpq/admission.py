"""Admission: the slots of the dataset schedule, and which waiting requests a freed slot takes.

Usage::

    from llmpq.admission import Slots, Window

    slots = Slots(prefill_size=4, decode_size=8, decode_count=2)   # 16 sequences in flight
    window = Window(iter(requests), size=4 * slots.concurrency)
    newcomers = window.take(3)      # the oldest waiting request and the 2 closest to it in length

The runtime (:mod:`llmpq.runtime.continuous`) and the simulator
(:func:`llmpq.simulator.simulate_dataset`) admit through this one window, so the simulated
schedule is the one that runs. No torch here: the planner imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Slots:
    """The plan's micro-batches as the dataset schedule uses them."""

    prefill_size: int  # newcomers per admit micro-batch
    decode_size: int  # sequences per slot group
    decode_count: int  # slot groups

    @property
    def concurrency(self) -> int:
        return self.decode_size * self.decode_count


class Window:
    """Lookahead over the requests: take the oldest and those closest to it in length
    (``length`` of an item: its prompt tokens), returned shortest first. The simulator
    (:func:`llmpq.simulator.simulate_dataset`) takes from the same window."""

    def __init__(self, items: Iterator, size: int,
                 length: Callable[[object], int] = lambda r: len(r.token_ids)) -> None:  # fmt: skip
        self.items, self.size, self.length = items, max(1, size), length
        self.buffer: list = []
        self._fill()

    def _fill(self) -> None:
        while len(self.buffer) < self.size:
            nxt = next(self.items, None)
            if nxt is None:
                return
            self.buffer.append(nxt)

    def __bool__(self) -> bool:
        return bool(self.buffer)

    def take(self, n: int) -> list:
        if n <= 0 or not self.buffer:
            return []
        lens = [self.length(r) for r in self.buffer]
        order = sorted(range(len(lens)), key=lambda i: (abs(lens[i] - lens[0]), i))
        picked = sorted(order[:n])
        out = [self.buffer[i] for i in picked]
        keep = set(picked)
        self.buffer = [r for i, r in enumerate(self.buffer) if i not in keep]
        self._fill()
        return sorted(out, key=self.length)


def lookahead_of(slots: Slots) -> int:
    """The window's size: four times the concurrency."""
    return 4 * slots.concurrency
