"""The user's own code, named on the command line (``file.py:factory`` or ``package.module:factory``):
imported and called only because the user asked for it, never because a file names it."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from quantwise.errors import QuantwiseError, first_line

USER_MODULE_PREFIX = "quantwise_user_"  # the module name a user's file.py is imported under


def load_callable(spec: str, what: str) -> Any:
    """``path/to/file.py:name`` or ``package.module:name`` -> the named object."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise QuantwiseError(f"{what} spec {spec!r} is not 'file.py:function' or 'package.module:function'", "name the factory after a colon")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise QuantwiseError(f"{what} file {target} does not exist", "check the path")
        module_name = f"{USER_MODULE_PREFIX}{abs(hash(path.resolve()))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as err:
            raise QuantwiseError(f"importing {target} failed ({type(err).__name__}: {err})", "fix the error in that file") from err
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise QuantwiseError(f"cannot import module {target!r} ({err})", "check the module path and that it is installed") from err
    obj = getattr(module, name, None)
    if obj is None or not callable(obj):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise QuantwiseError(f"{target} has no callable {name!r}", f"use one of: {', '.join(names[:12]) or '(none)'}")
    return obj


def call_factory(spec: str, what: str) -> Any:
    """Load the user's ``file.py:factory`` and call it; its own failure is one line naming it."""
    factory = load_callable(spec, what)
    try:
        return factory()
    except Exception as err:
        raise QuantwiseError(f"{what} factory {spec} failed ({type(err).__name__}: {first_line(err, 140)})", "fix the error in that function") from err
