"""Load a script of ``benchmarks/`` as a module for a test, leaving ``sys.path`` as it was.

The scripts put ``benchmarks/`` first on ``sys.path`` to import each other; left there, a later
``import workflow`` in the same test process would find ``benchmarks/workflow.py`` instead of
the project's ``workflow`` package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (its own imports of sibling scripts resolved)."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
