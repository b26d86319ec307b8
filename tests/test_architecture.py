"""The package's layering, checked by import-linter against the contracts in pyproject.toml:
the CLI on top, the report layer only below it, numeric primitives standing alone, and no
import cycle between quantwise's top-level packages and modules (lazy imports inside functions count too)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("import-linter is not installed: run scripts/setup.sh (it installs the dev extra)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this tree's package, whatever the venv has installed
    done = subprocess.run([lint, "--no-logo", "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_recipe_type_finds_its_method_from_its_own_file():
    """The registry is the recipe catalogue: each recipe type (every one has a preset) names the
    file of ``quantwise.methods`` that quantizes it, and that file registers a method for the kind
    of model its presets are for. No list of method files is kept anywhere else."""
    from quantwise.config import PRESET_TABLE, RECIPE_TYPES
    from quantwise.methods import method_for

    kinds = {type(p.recipe): ("classic" if p.models == "classic" else "language") for p in PRESET_TABLE.values()}
    assert set(kinds) == set(RECIPE_TYPES.values())
    for cls, models in kinds.items():
        method = method_for(cls())
        assert type(method).__module__ == f"quantwise.methods.{cls.method}", cls
        assert method.models == models, cls


def test_a_method_file_is_imported_only_when_its_recipe_is_used():
    code = ("import sys\nfrom quantwise.config import DynamicInt8\nfrom quantwise.methods import method_for\n"
            "assert 'quantwise.methods.static_fx' not in sys.modules\n"
            "method_for(DynamicInt8())\n"
            "print(sorted(m for m in sys.modules if m.startswith('quantwise.methods.')))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout
    assert "quantwise.methods.dynamic" in loaded
    assert "quantwise.methods.static_fx" not in loaded and "quantwise.methods.language" not in loaded
