"""GGUF checkpoints imported as local HF-format checkpoints.

Usage::

    from llmpq.models.gguf import import_gguf, read_gguf_info

    info = read_gguf_info("SmolLM2-135M-Instruct.Q4_1.gguf")   # header only, no weights read
    info.architecture, info.tensor_types                       # "llama", {"Q4_1": 210, ...}
    record = import_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "results/models/smollm2-135m")

or ``llmpq import --gguf FILE --out DIR``. The output is what every other part of llmpq reads:
``config.json``, ``model.safetensors`` (bf16), the tokenizer, ``generation_config.json``, plus

* ``data/heldout.txt`` and ``data/calibration.txt``: English texts that ship with Python, in two
  disjoint sets of documents (:func:`write_texts`), the defaults of ``llmpq ppl`` and of GPTQ /
  indicator calibration;
* ``llmpq_import.json``: where the weights came from (:class:`ImportRecord`), including the
  quantization the GGUF stored them in: a GGUF of Q4_1 tensors imports as bf16 weights that hold
  exactly the Q4_1 grid's values, and every quality figure of such a model is relative to them.

transformers reads the GGUF (tokenizer, config, tensors de-quantized to float32; the packages
``gguf`` and ``accelerate``). Its GGUF-loaded model cannot be saved as is, so the tensors are
copied, shape-checked and strictly, into a model built from the config, then saved in bf16.
Supported: the GGUF architectures that transformers reads and an llmpq adapter runs
(:data:`ARCHITECTURES`); GGUF has no OPT architecture.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from llmpq.errors import UserError
from llmpq.files import check_out_dir, file_sha256, staging_dir

GGUF_MAGIC = b"GGUF"
# GGUF general.architecture -> the HF model_type transformers builds (and llmpq runs)
ARCHITECTURES = MappingProxyType(
    {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "bloom": "bloom"}
)
RECORD_NAME = "llmpq_import.json"
# Held-out text: pydoc topics (the language reference, prose); calibration: stdlib docstrings.
# Capped so that a perplexity takes seconds, not minutes, on a 135 M model on two cores.
HELDOUT_MAX_CHARS = 60_000
CALIBRATION_MAX_CHARS = 120_000
_FULL_PRECISION = frozenset({"F32", "F16", "BF16", "F64"})


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file's header says (read without loading its weights)."""

    path: str
    architecture: str
    name: str
    num_layers: int
    tensor_count: int
    tensor_types: dict[str, int]  # GGML type name -> tensors stored in it

    @property
    def source_quantization(self) -> str:
        """The quantized types the weights were stored in ("Q4_1, Q8_0"), or "none"."""
        quantized = [
            t for t, _ in Counter(self.tensor_types).most_common() if t not in _FULL_PRECISION
        ]
        return ", ".join(quantized) or "none"


@dataclass(frozen=True)
class ImportRecord:
    """``llmpq_import.json``: the provenance of an imported checkpoint."""

    source: str  # "gguf"
    file: str
    sha256: str
    architecture: str
    model_type: str
    name: str
    tensor_types: dict[str, int]
    source_quantization: str  # e.g. "Q4_1, Q8_0": the weights are that grid's values in bf16
    dtype: str  # what model.safetensors stores
    parameters: int  # as stored (a tied head counted once)
    texts: dict[str, str] = field(default_factory=dict)  # heldout/calibration -> where from
    builtin: str | None = None  # the built-in name it was imported as, if any

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def load_import_record(model_dir: str | Path) -> ImportRecord | None:
    """The import record of a checkpoint directory, None if it was not imported."""
    path = Path(model_dir) / RECORD_NAME
    if not path.is_file():
        return None
    return ImportRecord(**json.loads(path.read_text()))


def _bad_file(
    path: Path, problem: str, fix: str = "re-download the file or pass another"
) -> UserError:
    return UserError("--gguf", str(path), fix, problem=problem)


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """The header of a GGUF file; UserError if it is missing, not GGUF, truncated or corrupt, or
    of an architecture llmpq cannot import."""
    path = Path(path)
    if not path.is_file():
        raise _bad_file(path, "does not exist", "give the path of a .gguf file")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise _bad_file(path, "is not a GGUF file (no GGUF magic at its start)")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises whatever numpy does on a truncated buffer
        raise _bad_file(path, f"is truncated or corrupt ({type(err).__name__}: {err})") from None
    try:
        arch = str(reader.fields["general.architecture"].contents())
    except (KeyError, ValueError, IndexError):
        raise _bad_file(path, "has no general.architecture field") from None
    if arch not in ARCHITECTURES:
        raise _bad_file(
            path,
            f"is of architecture {arch!r}, which llmpq cannot import",
            f"use a GGUF of one of {sorted(ARCHITECTURES)} (or a HF checkpoint directory)",
        )

    def value(key: str, default: object) -> object:
        fld = reader.fields.get(key)
        return fld.contents() if fld is not None else default

    types = Counter(t.tensor_type.name for t in reader.tensors)
    return GGUFInfo(
        path=str(path),
        architecture=arch,
        name=str(value("general.name", path.stem)),
        num_layers=int(value(f"{arch}.block_count", 0)),
        tensor_count=len(reader.tensors),
        tensor_types=dict(sorted(types.items())),
    )


def first_documents(source: str, max_chars: int) -> list:
    """The first documents of ``source`` in the corpus split order, up to a character cap (the
    held-out text is ``first_documents("pydoc_topics", HELDOUT_MAX_CHARS)``)."""
    from llmpq.models.corpus import SOURCES, _split_rank

    docs, total = [], 0
    for doc in sorted(SOURCES[source](), key=_split_rank):
        if total >= max_chars:
            break
        docs.append(doc)
        total += len(doc.text)
    return docs


def write_texts(data_dir: Path) -> dict[str, str]:
    """``heldout.txt`` and ``calibration.txt`` from text that ships with Python, disjoint by source:
    held-out = the ``help()`` topics (the language reference), calibration = the standard
    library's docstrings, each the first documents of its source in the corpus split order up to
    a character cap. Returns where each came from (for the import record)."""
    from llmpq.models.corpus import join_documents
    from llmpq.quality import HELDOUT_TEXT
    from llmpq.quant.calibration import CALIBRATION_TEXT

    def capped(source: str, max_chars: int) -> tuple[str, int]:
        docs = first_documents(source, max_chars)
        return join_documents(docs), len(docs)

    data_dir.mkdir(parents=True, exist_ok=True)
    heldout, n_heldout = capped("pydoc_topics", HELDOUT_MAX_CHARS)
    calib, n_calib = capped("stdlib_docstrings", CALIBRATION_MAX_CHARS)
    (data_dir / HELDOUT_TEXT.name).write_text(heldout, encoding="utf-8")
    (data_dir / CALIBRATION_TEXT.name).write_text(calib, encoding="utf-8")
    return {
        "heldout": f"{n_heldout} pydoc_data.topics documents ({len(heldout)} characters)",
        "calibration": f"{n_calib} standard-library docstring documents ({len(calib)} characters)",
    }


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' progress bars, casting notes and loading reports off (restored after)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its GGUF loop's own tqdm bar
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_float_model(path: Path, info: GGUFInfo):
    """(config, tokenizer, float32 model with the GGUF's tensors), read by transformers; a
    UserError naming the first tensor that contradicts the file's own metadata."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": path.name, "local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(path.parent, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model, loading = AutoModelForCausalLM.from_pretrained(
            path.parent,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # reported below, by name, instead of a long table
            output_loading_info=True,
            **kwargs,
        )
    except Exception as err:  # transformers raises many types on a GGUF it cannot read
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise _bad_file(
            path, f"cannot be read as a {info.architecture} model ({type(err).__name__}: {first})"
        ) from None
    mismatched = sorted(loading["mismatched_keys"])
    missing = sorted(loading["missing_keys"])
    if mismatched or missing:
        if mismatched:
            key, stored, expected = mismatched[0]
            detail = f"tensor {key} has shape {list(stored)}, its metadata gives {list(expected)}"
        else:
            key = missing[0]
            detail = f"tensor {key} is missing"
        raise _bad_file(
            path,
            f"does not match its own metadata: {detail} "
            f"({len(mismatched)} of the wrong shape, {len(missing)} missing)",
        )
    return config, tokenizer, model


def _rebuilt(config, loaded, path: Path):
    """A model built from ``config`` holding exactly the loaded tensors, in bf16 (strict)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    got = loaded.state_dict()
    for k, v in got.items():
        if not v.is_floating_point():
            raise _bad_file(path, f"tensor {k} was not de-quantized ({v.dtype})")
    model.load_state_dict(
        {k: v.to(torch.bfloat16) for k, v in got.items()}, strict=True, assign=True
    )
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


def import_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    builtin: str | None = None,
) -> ImportRecord:
    """Import ``gguf_file`` as a HF-format checkpoint at ``out_dir`` (see the module docstring).

    UserError, before any weights are read, if the file is not an importable GGUF or ``out_dir``
    exists and is not empty (unless ``overwrite``); nothing is left at ``out_dir`` on failure.
    """
    path = Path(gguf_file).resolve()
    out = Path(out_dir)
    check_out_dir(out, overwrite, field="--out", flag="--overwrite")
    info = read_gguf_info(path)
    from transformers import GenerationConfig

    with _quiet_transformers(), staging_dir(out, overwrite) as tmp:
        config, tokenizer, loaded = _load_float_model(path, info)
        model = _rebuilt(config, loaded, path)
        del loaded
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not (tmp / "generation_config.json").is_file():
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
        texts = write_texts(tmp / "data")
        stored = {p.data_ptr(): p.numel() for p in model.state_dict().values()}
        record = ImportRecord(
            source="gguf",
            file=str(path),
            sha256=file_sha256(path),
            architecture=info.architecture,
            model_type=config.model_type,
            name=info.name,
            tensor_types=info.tensor_types,
            source_quantization=info.source_quantization,
            dtype="bfloat16",
            parameters=sum(stored.values()),
            texts=texts,
            builtin=builtin,
        )
        (tmp / RECORD_NAME).write_text(record.to_json())
    return record
