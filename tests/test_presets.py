"""The shipped run configs, found by name through one lookup (gpo_vae.presets)."""

from __future__ import annotations

import pytest

MODELS = ("gpo_vae_plus", "gpo_vae", "sams_vae")  # longest first: gpo_vae_plus_x is not gpo_vae


def test_the_workflow_and_the_api_find_shipped_configs_by_the_same_lookup(tmp_path):
    """presets.find_preset is the one lookup: the API's preset_path and the workflow's
    config_path (which passes the configs/ beside it) give the same file for every name."""
    from gpo_vae.config import ConfigError
    from gpo_vae.presets import find_preset, preset_names, preset_path
    from workflow.datasets import config_path

    for name in preset_names():
        model = next(m for m in MODELS if name.startswith(m + "_"))
        dataset = name.removeprefix(model + "_")
        assert preset_path(model, dataset) == find_preset(model, dataset)
        if not dataset.startswith("custom"):
            assert config_path(dataset, model, None).read_bytes() == preset_path(model, dataset).read_bytes()
    assert config_path("my_screen.h5ad", "sams_vae", None).name == "sams_vae_custom.yaml"
    (tmp_path / "x_y.yaml").write_text("{}\n")
    assert find_preset("x", "y", tmp_path) == tmp_path / "x_y.yaml"
    assert find_preset("x", "z", tmp_path) is None
    with pytest.raises(ConfigError, match=r"no shipped config nope_synthetic\.yaml.*--config FILE"):
        config_path("synthetic", "nope", None)
