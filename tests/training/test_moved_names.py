"""Names that moved out of gpo_vae.training.train still import from there, with a warning."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("artifact_checksum", "gpo_vae.preprocessing.artifact"),
        ("cpu_threads", "gpo_vae.runtime"),
        ("resolve_device", "gpo_vae.runtime"),
    ],
)
def test_a_moved_name_still_imports_from_its_old_module_with_a_warning(name, home):
    import importlib

    from gpo_vae.training import train

    with pytest.warns(DeprecationWarning, match=f"moved to {home}.{name}"):
        old = getattr(train, name)
    assert old is getattr(importlib.import_module(home), name)
    with pytest.raises(AttributeError):
        train.no_such_name  # noqa: B018


def test_the_runtime_helpers_need_no_torch_to_import():
    import subprocess
    import sys

    code = "import sys, gpo_vae.runtime; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
