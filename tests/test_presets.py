"""The shipped run configs, found by name through one lookup (gpo_vae.presets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

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


SNAPSHOT = Path(__file__).parent / "snapshots" / "run_configs.json"


def _model_and_dataset(name: str) -> tuple[str, str]:
    model = next(m for m in MODELS if name.startswith(m + "_"))
    return model, name.removeprefix(model + "_")


def test_every_shipped_config_resolves_to_the_values_it_had_before_it_was_composed():
    """The run configs became family + dataset parts; each of the 18 resolves to the values
    snapshotted from the whole files they replaced (tests/snapshots/run_configs.json)."""
    from gpo_vae.config import to_dict
    from gpo_vae.presets import load_preset, preset_names

    before = json.loads(SNAPSHOT.read_text())
    assert sorted(before) == preset_names()
    for name in preset_names():
        assert to_dict(load_preset(*_model_and_dataset(name))) == before[name], name


def test_every_shipped_config_is_composed_of_one_family_and_one_dataset_file():
    from gpo_vae.presets import config_dir, preset_names

    folder = Path(str(config_dir()))
    for name in preset_names():
        model, dataset = _model_and_dataset(name)
        raw = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert raw["extends"] == [f"families/{model}.yaml", f"datasets/{dataset}.yaml"], name
        own = sum(len(section) for key, section in raw.items() if key != "extends")
        assert own <= 4, f"{name}: {own} keys of its own; shared ones belong in a part"


def test_a_composed_config_merges_its_parts_in_order_and_its_own_keys_win(tmp_path):
    from gpo_vae.config import load_yaml

    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.yaml").write_text("model: {n_latent: 8, hop: 1}\ntraining: {lr: 0.1}\n")
    (tmp_path / "parts" / "b.yaml").write_text("extends: [a.yaml]\nmodel: {hop: 2}\n")
    (tmp_path / "run.yaml").write_text("extends: [parts/b.yaml]\ntraining: {lr: 0.5, seed: 3}\n")
    assert load_yaml(tmp_path / "run.yaml") == {
        "model": {"n_latent": 8, "hop": 2},
        "training": {"lr": 0.5, "seed": 3},
    }


def test_a_shipped_config_copied_elsewhere_still_finds_its_parts(tmp_path):
    """A user copies a shipped config to edit it: its parts are found among the shipped ones."""
    from gpo_vae.config import load_config, to_dict
    from gpo_vae.presets import load_preset, preset_path
    from gpo_vae.run_config import RunConfig

    copy = tmp_path / "mine.yaml"
    copy.write_text(preset_path("gpo_vae_plus", "custom").read_text() + "\nevaluation:\n  top_de: 30\n")
    mine = load_config(RunConfig, copy)
    assert mine.evaluation.top_de == 30
    shipped = to_dict(load_preset("gpo_vae_plus", "custom"))
    shipped["evaluation"]["top_de"] = 30
    assert to_dict(mine) == shipped


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: [nowhere.yaml]\n", r"extends names 'nowhere.yaml', which is neither beside it"),
        ("extends: 3\n", r"extends must be a list of config files, got 3"),
        ("extends: [me.yaml]\n", r"leads back to itself"),
    ],
)
def test_a_bad_extends_names_the_file_and_the_fix(tmp_path, text, message):
    from gpo_vae.config import ConfigError, load_yaml

    (tmp_path / "me.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(tmp_path / "me.yaml")
