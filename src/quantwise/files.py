"""Every file and folder quantwise writes goes through here: it is written under a temporary name
beside its destination and moved into place only when complete, so a failure, a full disk, Ctrl-C
or SIGTERM (the CLI turns it into an exception) leaves neither a partial output nor a stray
temporary one, and two processes writing the same path each leave a whole file."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """A temporary path with ``path``'s own name (formats such as .pt2 archives embed it), in a
    hidden folder beside it; moved to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield workdir / path.name
        os.chmod(workdir / path.name, 0o644)  # results, recipes and exports are meant to be read
        os.replace(workdir / path.name, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with staged_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def staged_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """An empty temporary folder beside ``path`` that becomes ``path`` if the block succeeds.

    An existing ``path`` is replaced only with ``replace`` (and removed only after the new one is in
    place); without it, one that appeared meanwhile (another process) is kept: FileExistsError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if path.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / path.name, path)  # the old one back: nothing lost
                raise
            finally:
                if not (old / path.name).exists() or path.exists():
                    shutil.rmtree(old, ignore_errors=True)
        else:
            if path.exists():  # another process wrote it since the caller checked
                raise FileExistsError(errno.EEXIST, "already exists", str(path))
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
