"""What a command was asked, as one value: the options of ``quantize``, ``eval``, ``compare``,
``debug``, ``sensitivity`` and ``auto``, handed by keyword to the commands of the model's kind
(``cli/classic.py``, ``cli/language.py``), which read the options that apply to them and refuse
the others."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Where a model's data comes from: samples for a classic model, text for a language model."""

    data: Optional[str] = None
    n_calibration: Optional[int] = None
    n_evaluation: Optional[int] = None
    text: Optional[str] = None
    context: int = 512  # language models: tokens per window
    eval_tokens: int = 24576  # language models: evaluation tokens
    json_path: Optional[Path] = None  # report files, for the commands that write them
    html_path: Optional[Path] = None


@dataclass(frozen=True, kw_only=True)
class FanOutOptions:
    """Where a sweep's units run: in process (neither given), a local Ray instance, or a cluster."""

    workers: Optional[int] = None
    ray_address: Optional[str] = None

    @property
    def in_process(self) -> bool:
        return self.workers is None and self.ray_address is None


@dataclass(frozen=True, kw_only=True)
class QuantizeRequest(DataOptions):
    model: str
    recipe: str
    output: Path
    force: bool = False
    evaluate: bool = True


@dataclass(frozen=True, kw_only=True)
class EvalRequest(DataOptions):
    target: str  # an artifact directory, or a model spec evaluated in float
    model: Optional[str] = None  # the float model of a user model's artifact (never read from the artifact)


@dataclass(frozen=True, kw_only=True)
class CompareRequest(DataOptions, FanOutOptions):
    model: str
    recipes: Optional[str] = None  # None: the kind's defaults
    batches: str = "1,32"
    compile: bool = True
    repeats: Optional[int] = None  # None: the kind's default
    target: str = "pytorch"
    peers: bool = True


@dataclass(frozen=True, kw_only=True)
class DebugRequest(DataOptions):
    model: str
    recipe: Optional[str] = None  # None: the kind's default
    samples: Optional[int] = None  # None: the kind's default
    layer: Optional[str] = None
    batch_size: int = 4


@dataclass(frozen=True, kw_only=True)
class SensitivityRequest(DataOptions, FanOutOptions):
    model: str
    recipe: str
    top_k: int = 5
    controls: int = 3
    proxy_samples: int = 32
    confirm_alone: Optional[bool] = None
    use_cache: bool = True
    all_layers: bool = False


@dataclass(frozen=True, kw_only=True)
class AutoRequest(DataOptions, FanOutOptions):
    model: str
    max_drop: Optional[float] = None
    objective: str = "latency"
    out_dir: Optional[Path] = None
    recipe_out: Optional[Path] = None
    batch: int = 1
    compile: bool = True
    max_float: Optional[int] = None
    proxy_samples: int = 32
    workflows: Optional[str] = None  # None: the kind's default candidates
    target: str = "pytorch"
    force: bool = False
