"""What a command was asked, as one value: the options of ``quantize``, ``eval``, ``compare``,
``debug``, ``sensitivity`` and ``auto``, handed by keyword to the commands of the model's kind (``cli/classic.py``,
``cli/language.py``), which read the options that apply to them and refuse the others."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class QuantizeRequest:
    model: str
    recipe: str
    output: Path
    force: bool = False
    evaluate: bool = True
    data: Optional[str] = None
    n_calibration: Optional[int] = None
    n_evaluation: Optional[int] = None
    text: Optional[str] = None
    context: int = 512
    eval_tokens: int = 24576


@dataclass(frozen=True)
class EvalRequest:
    target: str  # an artifact directory, or a model spec evaluated in float
    model: Optional[str] = None  # the float model of a user model's artifact (never read from the artifact)
    data: Optional[str] = None
    n_evaluation: Optional[int] = None
    text: Optional[str] = None
    context: int = 512
    eval_tokens: int = 24576


@dataclass(frozen=True)
class CompareRequest:
    model: str
    recipes: Optional[str] = None  # None: the kind's defaults
    batches: str = "1,32"
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None
    data: Optional[str] = None
    compile: bool = True
    repeats: Optional[int] = None  # None: the kind's default
    n_calibration: Optional[int] = None
    n_evaluation: Optional[int] = None
    text: Optional[str] = None
    context: int = 512
    eval_tokens: int = 24576
    target: str = "pytorch"
    peers: bool = True


@dataclass(frozen=True)
class DebugRequest:
    model: str
    recipe: str
    samples: Optional[int] = None  # None: the kind's default
    layer: Optional[str] = None
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None
    data: Optional[str] = None
    n_calibration: Optional[int] = None
    batch_size: int = 4
    context: int = 512
    text: Optional[str] = None


@dataclass(frozen=True)
class SensitivityRequest:
    model: str
    recipe: str
    top_k: int = 5
    controls: int = 3
    proxy_samples: int = 32
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None
    data: Optional[str] = None
    n_calibration: Optional[int] = None
    n_evaluation: Optional[int] = None
    confirm_alone: Optional[bool] = None
    use_cache: bool = True
    all_layers: bool = False


@dataclass(frozen=True)
class AutoRequest:
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
    json_path: Optional[Path] = None
    html_path: Optional[Path] = None
    data: Optional[str] = None
    n_calibration: Optional[int] = None
    n_evaluation: Optional[int] = None
    force: bool = False
