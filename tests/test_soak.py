"""A short soak (scripts/soak.py): 100 generations through Llama and 100 through the Engine,
RSS must not grow by more than a generous bound. The full run: ``python scripts/soak.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import soak

GROWTH_LIMIT_MIB = 20.0


@pytest.mark.slow
@pytest.mark.parametrize("api", ["llama", "engine"])
def test_short_soak_memory_is_flat(model_path, api):
    run = soak.run_llama if api == "llama" else soak.run_engine
    report = run(str(model_path), 100, 2, 20, 2, 1, 0)
    assert report["generations"] == 100 and len(report["samples_mib"]) == 5
    assert report["growth_mib"] < GROWTH_LIMIT_MIB, report
