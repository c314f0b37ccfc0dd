"""Tiny random-init causal LMs of every supported family, saved once per session.

Each ``tiny`` fixture value is a ``tiny_models.Tiny`` (made by the root conftest's ``make_tiny``):
the HF model, its save_pretrained directory and the HF reference outputs (prefill logits and
greedy tokens) for the shared left-padded batch.
"""

from __future__ import annotations

import pytest
from tiny_models import TINY


@pytest.fixture(scope="session", params=list(TINY))
def tiny(request, tmp_path_factory, make_tiny):
    return make_tiny(request.param, tmp_path_factory.mktemp(request.param))
