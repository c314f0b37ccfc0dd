"""The runtime's schedule as data: which sequences form each prefill and decode micro-batch.

Usage::

    from llmpq.runtime.schedule import Schedule

    sched = Schedule.of(batch_size=10, prefill_size=4, decode_size=5, decode_count=2, gen_len=32)
    sched.prefill_slices      # ((0, 4), (4, 8), (8, 10)): consecutive prompts
    sched.decode_slices       # ((0, 5), (5, 10)): consecutive sequences, empty groups dropped

The schedule (the one the planner's time model and the simulator assume):

1. All prompts are left-padded to one length. Prefill runs ``ceil(B / prefill_size)``
   micro-batches of consecutive prompts through the stages, pipelined: a stage sends micro-batch
   ``p`` on and starts ``p + 1`` while the send is in flight. The last stage samples the first
   token of each sequence and sends the token ids back to the first stage (the ring).
2. Decode starts once every first token is back: each stage regroups its KV caches into
   ``decode_count`` micro-batches of ``decode_size`` consecutive sequences, and the first stage
   sends them all, then feeds each micro-batch again as its tokens come back (first in, first
   out), so that every stage works on a different micro-batch at once.
3. A micro-batch leaves the ring after ``gen_len`` tokens per sequence (the prefill token and
   ``gen_len - 1`` decode steps), or once all its sequences have emitted an end-of-sequence
   token; then the first stage sends STOP down the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmpq.errors import UserError

Slice = tuple[int, int]  # sequences [start, end) of the batch


def _slices(batch_size: int, size: int, count: int | None = None) -> tuple[Slice, ...]:
    count = -(-batch_size // size) if count is None else count
    bounds = [(k * size, min((k + 1) * size, batch_size)) for k in range(count)]
    return tuple((s, e) for s, e in bounds if s < e)


@dataclass(frozen=True)
class Schedule:
    batch_size: int
    prefill_slices: tuple[Slice, ...]
    decode_slices: tuple[Slice, ...]
    gen_len: int

    @classmethod
    def of(
        cls, batch_size: int, prefill_size: int, decode_size: int, decode_count: int, gen_len: int
    ) -> Schedule:
        if decode_size * decode_count < batch_size:
            raise UserError(
                "plan.micro_batch", f"{decode_count} x {decode_size}",
                f"decode micro-batches must hold all {batch_size} prompts",
                "is too small for the prompts",
            )  # fmt: skip
        if gen_len < 1:
            raise UserError("gen_len", gen_len, "generate at least one token")
        return cls(
            batch_size,
            _slices(batch_size, prefill_size),
            _slices(batch_size, decode_size, decode_count),
            gen_len,
        )

    @property
    def decode_steps(self) -> int:
        """Decode steps per micro-batch after the prefill token (without early stop)."""
        return self.gen_len - 1

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "prefill_slices": [list(s) for s in self.prefill_slices],
            "decode_slices": [list(s) for s in self.decode_slices],
            "gen_len": self.gen_len,
        }
