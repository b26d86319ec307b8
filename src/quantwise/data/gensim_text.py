"""English text with human labels from gensim's bundled test data (``gensim/test/test_data``).

gensim ships these small corpora inside its wheel, so they are available offline:

- ``lee_background.cor``: 300 news articles, one per line (unlabelled background text);
- ``lee.cor``: the 50 news articles of Lee et al. (2005), one per line, and
  ``similarities0-1.txt``: their mean human similarity ratings, a 50x50 upper-triangular
  matrix (1 on the diagonal, 0 below it), ratings scaled to 0..1;
- ``pang_lee_polarity.cor``: 200 movie-review sentences (100 negative, then 100 positive),
  each prefixed with ``__label__neg`` or ``__label__pos`` (fastText format).

Only the files are read; gensim itself is never imported (it is slow to import).
"""
from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

import numpy as np

# the files are Windows-1252 (em dashes as 0x97, accented letters, pound signs)
_ENCODING = "cp1252"
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z])")


def gensim_test_file(name: str) -> Path:
    """Path of a file in gensim's test data, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gensim is not installed; its test data holds the text corpora")
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / name
    if not path.is_file():
        raise FileNotFoundError(f"gensim test data file missing: {path}")
    return path


def _lines(name: str) -> list[str]:
    return [line.strip() for line in gensim_test_file(name).read_text(encoding=_ENCODING).splitlines() if line.strip()]


def split_sentences(text: str) -> list[str]:
    """Split news prose into sentences at ., ! or ? followed by a capital or a quote."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


@cache
def lee_background_sentences(min_words: int = 5) -> tuple[str, ...]:
    """Distinct sentences of at least ``min_words`` words from the 300 background articles."""
    seen: dict[str, None] = {}
    for doc in _lines("lee_background.cor"):
        for sentence in split_sentences(doc):
            if len(sentence.split()) >= min_words:
                seen.setdefault(sentence, None)
    return tuple(seen)


@cache
def lee_documents() -> tuple[str, ...]:
    """The 50 articles rated by humans in Lee et al. (2005)."""
    docs = tuple(_lines("lee.cor"))
    if len(docs) != 50:
        raise ValueError(f"lee.cor should hold 50 documents, found {len(docs)}")
    return docs


def lee_similarities() -> np.ndarray:
    """Human similarity ratings of the 50 Lee documents, as a symmetric 50x50 float matrix."""
    upper = np.loadtxt(gensim_test_file("similarities0-1.txt"), dtype=np.float64)
    if upper.shape != (50, 50):
        raise ValueError(f"similarities0-1.txt should be 50x50, got {upper.shape}")
    return np.triu(upper) + np.triu(upper, 1).T


@cache
def polarity_sentences() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The 200 review sentences and their labels (1 = positive, 0 = negative)."""
    texts: list[str] = []
    labels: list[int] = []
    for line in _lines("pang_lee_polarity.cor"):
        tag, _, text = line.partition(" ")
        if tag not in ("__label__pos", "__label__neg"):
            raise ValueError(f"unexpected polarity line: {line[:40]!r}")
        texts.append(text.strip())
        labels.append(int(tag == "__label__pos"))
    return tuple(texts), tuple(labels)
