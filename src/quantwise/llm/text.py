"""Text for language models: the gensim Wikipedia sample (split by article) or a user's files.

The zoo text is gensim's ``enwiki-latest-pages-articles1...-shortened.bz2`` test file: 106
real articles (CC BY-SA) after dropping redirects and stubs. It is split once, by article,
into a calibration part (every fourth article) and an evaluation part (the rest), so no
evaluation text is ever seen while calibrating.
"""
from __future__ import annotations

import bz2
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from quantwise.data.gensim_text import gensim_test_file
from quantwise.errors import QuantwiseError

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_ARTICLE_CHARS = 2000
CALIBRATION_EVERY = 4
TEXT_SUFFIXES = (".txt", ".md", ".text")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class TextSplit:
    """Calibration and evaluation documents, and where they came from."""

    calibration: tuple[str, ...]
    evaluation: tuple[str, ...]
    description: str


@cache
def wiki_articles() -> tuple[tuple[str, str], ...]:
    """(title, plain text) of the sample's real articles, in file order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(gensim_test_file(WIKI_FILE)) as f:
        for title, markup, *_ in extract_pages(f):
            text = _BLANK_LINES.sub("\n\n", filter_wiki(markup)).strip()
            if not text.upper().startswith("#REDIRECT") and len(text) >= MIN_ARTICLE_CHARS:
                out.append((title, text))
    return tuple(out)


def wiki_split() -> TextSplit:
    articles = wiki_articles()
    cal = tuple(text for i, (_, text) in enumerate(articles) if i % CALIBRATION_EVERY == 0)
    ev = tuple(text for i, (_, text) in enumerate(articles) if i % CALIBRATION_EVERY != 0)
    return TextSplit(cal, ev, f"gensim Wikipedia sample, {len(articles)} articles: calibration = every {CALIBRATION_EVERY}th article ({len(cal)}), evaluation = the other {len(ev)}")


def text_split(path: str | Path | None = None) -> TextSplit:
    """The user's text when given, else the zoo's Wikipedia sample."""
    return user_split(path) if path else wiki_split()


def user_split(path: str | Path) -> TextSplit:
    """A plain-text file (split by paragraph blocks) or a folder of text files (split by file).

    Every fourth document calibrates, the others evaluate, as for the zoo text.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise QuantwiseError(f"no text files ({', '.join(TEXT_SUFFIXES)}) in {path}", "point --text at a .txt file or a folder of them")
        docs = [_read(p) for p in files]
        unit = "file"
    elif path.is_file():
        paragraphs = [p.strip() for p in _read(path).split("\n\n") if p.strip()]
        # documents of ~20 paragraphs, so a one-file corpus still splits by whole passages
        docs = ["\n\n".join(paragraphs[i : i + 20]) for i in range(0, len(paragraphs), 20)]
        unit = "block of 20 paragraphs"
    else:
        raise QuantwiseError(f"text not found: {path}", "give a plain-text file or a folder of .txt files")
    docs = [d for d in docs if d.strip()]
    if len(docs) < 2:
        raise QuantwiseError(f"{path} holds too little text to split into calibration and evaluation parts ({len(docs)} document)", "give at least two files, or a file with 40+ paragraphs")
    cal = tuple(d for i, d in enumerate(docs) if i % CALIBRATION_EVERY == 0)
    ev = tuple(d for i, d in enumerate(docs) if i % CALIBRATION_EVERY != 0)
    return TextSplit(cal, ev, f"{path}: {len(docs)} documents (one per {unit}); calibration = every {CALIBRATION_EVERY}th ({len(cal)}), evaluation = the other {len(ev)}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QuantwiseError(f"{path} is not UTF-8 text", "convert it to UTF-8 plain text") from err
