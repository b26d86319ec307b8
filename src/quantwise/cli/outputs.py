"""Result files a command writes besides its terminal output (--json, --html)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from quantwise.errors import QuantwiseError


def check_outputs(**paths: Optional[Path]) -> None:
    """Refuse an unusable output path before any slow work (keyword: option name without --)."""
    for option, path in paths.items():
        if path is None:
            continue
        flag = f"--{option}"
        if path.is_dir():
            raise QuantwiseError(f"{flag} {path} is a folder", f"give a file path, e.g. {flag} {path / ('report.' + option)}")
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent  # the first folder that exists; the rest is created on write
        if not parent.is_dir() or not _can_create_in(parent):
            raise QuantwiseError(f"cannot write {flag} {path}: {parent} is not a writable folder", f"choose another path for {flag}")


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (permission bits say nothing to root, or of /proc)."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".quantwise-probe-"):
            return True
    except OSError:
        return False


def write_outputs(data: dict[str, Any], document: Callable[[], Any], json_path: Optional[Path], html_path: Optional[Path], out: Console) -> None:
    """Write the JSON and the HTML report (each atomically) from the same report object."""
    from quantwise.report.table import write_json

    if json_path:
        write_json(data, json_path)
        out.print(f"wrote {json_path}")
    if html_path:
        from quantwise.report.html import write_html

        write_html(document(), html_path)
        out.print(f"wrote {html_path}")


def auto_outputs(model: str, out_dir: Optional[Path], recipe_out: Optional[Path], force: bool) -> Path:
    """Check auto's output paths before any slow work; the recipe file's path (default MODEL-auto.json)."""
    from quantwise.artifact.store import check_replaceable

    if out_dir is not None:
        check_replaceable(out_dir, force)
    recipe_path = recipe_out or Path("".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model) + "-auto.json")
    if recipe_path.suffix not in (".json", ".yaml", ".yml"):
        raise QuantwiseError(f"--recipe-out {recipe_path} must end in .json, .yaml or .yml", "e.g. --recipe-out best.json")
    return recipe_path
