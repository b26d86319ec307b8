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
