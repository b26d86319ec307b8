"""Other libraries' warnings, kept out of quantwise's own output and counted in one line at the end.

torch, torchao, ONNX Runtime, transformers and Python's ``warnings`` speak on their own (deprecations,
kernels a build lacks, quantization parameters they fill in themselves). A command shows quantwise's
lines only; what the others said is captured while it runs and summed up once, by library, with
the hint that ``--debug`` shows it all as it happens.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
import weakref
from collections import Counter
from typing import Any

# Loggers whose INFO chatter is dropped outright; their warnings are captured like any other library's.
CHATTY = ("torch", "torchao", "transformers", "urllib3", "PIL", "matplotlib", "onnxruntime", "onnx", "executorch")


class Capture:
    """While installed: Python warnings and other libraries' log records are counted, not shown."""

    def __init__(self) -> None:
        self.sources: Counter[str] = Counter()
        self._showwarning: Any = None
        self._filter: logging.Filter | None = None

    def install(self) -> None:
        self.sources.clear()
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning
        self._filter = _OwnLinesOnly(self.sources)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._filter)
        for name in CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        # other libraries' own tqdm bars (transformers' GGUF conversion): quantwise shows its own; tqdm
        # reads this when it is imported, which the line below does first (through torch and transformers)
        os.environ.setdefault("TQDM_DISABLE", "1")
        route_library_logs()

    def uninstall(self) -> None:
        if self._showwarning is not None:
            warnings.showwarning = self._showwarning
            self._showwarning = None
        if self._filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._filter)
            self._filter = None

    def summary(self) -> str | None:
        if not self.sources:
            return None
        total = sum(self.sources.values())
        by = ", ".join(f"{name} {count}" for name, count in self.sources.most_common())
        return f"{total} warning{'s' if total != 1 else ''} from other libraries not shown ({by}); --debug shows them"

    def _warning(self, message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        self.sources[_library_of_file(filename)] += 1


class _OwnLinesOnly(logging.Filter):
    """On every root handler: quantwise's records pass; another library's are counted (once,
    however many handlers see the record) and dropped."""

    def __init__(self, sources: Counter[str]) -> None:
        super().__init__()
        self.sources = sources
        self._counted: weakref.WeakSet[logging.LogRecord] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "quantwise" or record.name.startswith("quantwise."):
            return True
        if record.levelno >= logging.WARNING and record not in self._counted:  # their INFO lines: dropped, not counted
            self._counted.add(record)
            self.sources[record.name.split(".")[0] or "root"] += 1
        return False


def route_library_logs() -> None:
    """torch and transformers give their loggers their own stderr handlers and stop them propagating
    (torch does so again when it is imported): import both now, then send every such logger of the
    libraries above to the root handlers, where the filter sees it."""
    if "torch" not in sys.modules:
        import torch  # noqa: F401  (now, so that its logging setup happens before ours, not after)
    try:
        import transformers.utils.logging  # creates the 'transformers' logger and its handler

        transformers.utils.logging.disable_progress_bar()  # its own tqdm bars (GGUF conversion, weight loading): quantwise shows its own
    except ImportError:
        pass
    libraries = {*CHATTY, "torch"}
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] in libraries and isinstance(logger, logging.Logger) and not logger.propagate:
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def _library_of_file(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            if rest:
                return rest[0].removesuffix(".py")
    return "python"
