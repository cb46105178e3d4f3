"""benchmarks/scale.py's growth table, from rows of two factors."""

from __future__ import annotations

from tests.benchmark_modules import load_benchmark


def test_growth_divides_the_largest_factor_by_the_smallest_and_skips_failed_stages():
    scale = load_benchmark("scale")
    rows = [
        {"factor": 0.5, "cells": 100, "stage": "preprocess", "seconds": 10.0, "peak_gb": 2.0},
        {"factor": 1.0, "cells": 200, "stage": "preprocess", "seconds": 25.0, "peak_gb": 2.5},
        {"factor": 0.5, "cells": 100, "stage": "evaluate", "seconds": 5.0, "peak_gb": 1.0},
        {"factor": 1.0, "cells": 200, "stage": "evaluate", "seconds": float("nan"), "peak_gb": float("nan")},
    ]
    lines = scale._growth(rows).splitlines()
    preprocess = next(line for line in lines if line.startswith("preprocess")).split()
    assert preprocess[1:] == ["2.00", "2.50", "1.25"]
    assert not any(line.startswith("evaluate") for line in lines)  # one successful factor: no ratio
