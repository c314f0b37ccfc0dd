"""Model shapes and sizes (work in progress; see family_of)."""

from __future__ import annotations

from llmpq.errors import UserError

# HF `model_type` -> the llmpq family whose adapter runs it.
FAMILY_OF_MODEL_TYPE = {
    "opt": "opt",
    "bloom": "bloom",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
}


def family_of(model_type: str) -> str:
    """The llmpq family ("opt", "bloom" or "llama") of an HF ``model_type``; UserError if unsupported."""
    try:
        return FAMILY_OF_MODEL_TYPE[model_type]
    except KeyError:
        raise UserError(
            "config.json model_type",
            model_type,
            f"use a model of a supported family ({', '.join(sorted(FAMILY_OF_MODEL_TYPE))})",
            problem="is not a supported model family",
        ) from None
