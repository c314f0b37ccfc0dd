"""Regrouping one stage's KV caches from prefill micro-batches into decode micro-batches.

Usage::

    from llmpq.runtime.kvcache import concat_caches, split_cache, cache_bytes

    whole = concat_caches(stage.new_cache(), prefill_caches, stage.stage_range.layer_ids)
    decode_caches = split_cache(whole, [(0, 5), (5, 10)], stage.new_cache, layer_ids)
    cache_bytes(decode_caches[0], layer_ids)

All prompts are padded to one length, so every prefill cache of a stage has the same sequence
length and the caches concatenate along the batch dimension (dim 0 of ``[B, heads, seq, d]``).
A cache layer is copied with ``copy.copy`` and given the new tensors, so per-layer state other
than the tensors (a sliding window's token count) carries over.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache


def concat_caches(
    target: DynamicCache, caches: Sequence[DynamicCache], layer_ids: range
) -> DynamicCache:
    """``target`` holding, for each layer in ``layer_ids``, the caches' tensors batch-stacked."""
    for i in layer_ids:
        parts = [c.layers[i] for c in caches]
        layer = copy.copy(parts[0])
        layer.keys = torch.cat([p.keys for p in parts], dim=0)  # [B, heads, seq, d]
        layer.values = torch.cat([p.values for p in parts], dim=0)
        target.layers[i] = layer
    return target


def split_cache(
    cache: DynamicCache,
    slices: Sequence[tuple[int, int]],
    new_cache: Callable[[], DynamicCache],
    layer_ids: range,
) -> list[DynamicCache]:
    """One new cache per ``[start, end)`` batch slice of ``cache`` (contiguous copies)."""
    out = []
    for start, end in slices:
        part = new_cache()
        for i in layer_ids:
            layer = copy.copy(cache.layers[i])
            layer.keys = cache.layers[i].keys[start:end].contiguous()
            layer.values = cache.layers[i].values[start:end].contiguous()
            part.layers[i] = layer
        out.append(part)
    return out


def cache_bytes(cache: DynamicCache, layer_ids: range) -> int:
    """Bytes of the K and V tensors the cache holds for ``layer_ids``."""
    total = 0
    for i in layer_ids:
        layer = cache.layers[i]
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is not None:
                total += t.numel() * t.element_size()
    return total
