"""The default model's text: documents that ship with Python, a split by document, a local BPE.

Usage::

    from llmpq.models.corpus import build_corpus, split_corpus, train_tokenizer

    docs = build_corpus(("pydoc_topics", "stdlib_docstrings"))   # tuple[Document, ...], fixed order
    splits = split_corpus(docs, heldout_fraction=0.05)           # CorpusSplits(train=..., heldout=...)
    tokenizer = train_tokenizer(splits.train_text(), vocab_size=4096)   # PreTrainedTokenizerFast
    ids = tokenizer(splits.heldout_text())["input_ids"]

Sources (nothing is downloaded; the text depends only on the Python version that runs this):

* ``pydoc_topics``: ``pydoc_data.topics.topics``, the language reference pages that ``help()``
  shows (79 topics, ~465 K characters); one document per topic.
* ``stdlib_docstrings``: the docstrings of the standard library's own ``.py`` sources (modules,
  classes, functions), read with ``ast`` in sorted path order, test folders and
  ``site-packages`` left out; one document per module file (~1.8 M characters on 3.11).
  A docstring already seen earlier (by exact text) is dropped, so copies such as ``_pyio``/``io``
  do not leak across the split.

A split's text is its documents joined by :data:`DOCUMENT_SEPARATOR`; its token ids are plain
``tokenizer(text)["input_ids"]`` of that text (no BOS/EOS is added), so anyone who tokenizes
``DIR/data/heldout.txt`` gets exactly the ids the training report evaluated.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llmpq.errors import UserError

DOCUMENT_SEPARATOR = "\n\n"
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)  # ids 0, 1, 2
# Folders of the standard library whose .py files are tests, test data or third-party code.
_SKIPPED_STDLIB_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


@dataclass(frozen=True)
class Document:
    """One unit of the split: a pydoc topic or the docstrings of one standard-library module."""

    source: str  # a key of SOURCES
    name: str  # unique within the source: topic name, or module path relative to the stdlib
    text: str

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class CorpusSplits:
    """Documents of the train and held-out splits, each in corpus order."""

    train: tuple[Document, ...]
    heldout: tuple[Document, ...]

    def train_text(self) -> str:
        return join_documents(self.train)

    def heldout_text(self) -> str:
        return join_documents(self.heldout)


def join_documents(docs: Iterable[Document]) -> str:
    return DOCUMENT_SEPARATOR.join(d.text for d in docs)


def pydoc_topic_documents() -> Iterator[Document]:
    """The ``help()`` topics of the standard library, in sorted topic order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if text:
            yield Document("pydoc_topics", name, text)


def _docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of one source file, in source order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old modules
        tree = ast.parse(source)
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = [n for n in ast.walk(tree) if isinstance(n, owners)]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))  # the module (no lineno) first
    return [d.strip() for n in nodes if (d := ast.get_docstring(n))]


def stdlib_source_files(stdlib_dir: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files, tests and site-packages left out, sorted by path."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    return sorted(
        p
        for p in root.rglob("*.py")
        if not _SKIPPED_STDLIB_DIRS.intersection(p.relative_to(root).parts[:-1])
    )


def stdlib_docstring_documents(stdlib_dir: Path | None = None) -> Iterator[Document]:
    """One document per standard-library module: its docstrings not seen before, in order."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    for path in stdlib_source_files(root):
        try:
            found = _docstrings(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few files are deliberately malformed test data
        new = [d for d in found if d not in seen]
        seen.update(new)
        if new:
            yield Document("stdlib_docstrings", path.relative_to(root).as_posix(), "\n\n".join(new))


SOURCES = MappingProxyType(
    {
        "pydoc_topics": pydoc_topic_documents,
        "stdlib_docstrings": stdlib_docstring_documents,
    }
)


def build_corpus(sources: Iterable[str]) -> tuple[Document, ...]:
    """All documents of the named sources, source by source in the order given."""
    docs: list[Document] = []
    for source in sources:
        if source not in SOURCES:
            raise UserError("corpus source", source, f"use one of {sorted(SOURCES)}")
        docs.extend(SOURCES[source]())
    return tuple(docs)


def _split_rank(doc: Document) -> str:
    """A stable pseudo-random rank: the same document is held out on every machine and run."""
    return hashlib.sha256(doc.key.encode()).hexdigest()


def split_corpus(docs: Iterable[Document], heldout_fraction: float) -> CorpusSplits:
    """Hold out whole documents, per source, until ``heldout_fraction`` of its characters.

    Documents are taken in the order of the SHA-256 of ``source:name``, so the split does not
    depend on the seed, the corpus order or which other documents exist.
    """
    if not 0.0 < heldout_fraction < 0.5:
        raise UserError("heldout_fraction", heldout_fraction, "use a value such as 0.05")
    docs = tuple(docs)
    heldout_keys: set[str] = set()
    for source in dict.fromkeys(d.source for d in docs):
        of_source = [d for d in docs if d.source == source]
        target_chars = heldout_fraction * sum(len(d.text) for d in of_source)
        taken_chars = 0
        for doc in sorted(of_source, key=_split_rank):
            if taken_chars >= target_chars:
                break
            heldout_keys.add(doc.key)
            taken_chars += len(doc.text)
    return CorpusSplits(
        train=tuple(d for d in docs if d.key not in heldout_keys),
        heldout=tuple(d for d in docs if d.key in heldout_keys),
    )


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style) trained on ``text``; specials ``<pad> <s> </s>`` are ids 0-2.

    Any string round-trips: ``tok.decode(tok(text)["input_ids"]) == text``.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
    )
