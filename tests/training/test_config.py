"""TrainingConfig validation and the run-config YAMLs' model/training sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpo_vae.config import ConfigError, from_dict, load_yaml, to_dict
from gpo_vae.module import ModelConfig
from gpo_vae.run_config import RunConfig, load_run_config
from gpo_vae.training.config import TrainingConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DATASETS = ("synthetic", "rpe1", "k562", "adamson", "custom")


def test_defaults_are_the_published_training_settings():
    config = TrainingConfig()
    assert (config.lr, config.weight_decay, config.batch_size, config.gradient_clip) == (
        3e-4,
        1e-6,
        512,
        100.0,
    )
    assert (config.max_epochs, config.early_stopping_patience, config.device, config.wandb) == (
        2000,
        30,
        "auto",
        False,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"gradient_clip": 0.0}, "gradient_clip"),
        ({"early_stopping_patience": -1}, "early_stopping_patience"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"precision": "16"}, "precision"),
        ({"num_workers": -1}, "num_workers"),
        ({"cpu_threads": 0}, "cpu_threads"),
        ({"max_time_minutes": 0.0}, "max_time_minutes"),
        ({"log_every_n_steps": 0}, "log_every_n_steps"),
        ({"wandb_project": ""}, "wandb_project"),
    ],
)
def test_impossible_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        TrainingConfig(**changes)


@pytest.mark.parametrize("model", ["gpo_vae", "sams_vae", "gpo_vae_plus"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_shipped_config_loads(model, dataset):
    config = load_run_config(CONFIG_DIR / f"{model}_{dataset}.yaml")
    assert isinstance(config.training, TrainingConfig)
    raw = load_yaml(CONFIG_DIR / f"{model}_{dataset}.yaml")
    assert set(raw) == {"preprocess", "model", "training", "evaluation"}
    # every key is spelled out, so a reader sees the whole configuration
    assert set(raw["training"]) == set(to_dict(TrainingConfig()))


@pytest.mark.parametrize("dataset", DATASETS)
def test_sams_vae_twin_differs_only_in_the_baseline_switches(dataset):
    gpo = load_run_config(CONFIG_DIR / f"gpo_vae_{dataset}.yaml")
    sams = load_run_config(CONFIG_DIR / f"sams_vae_{dataset}.yaml")
    assert sams.preprocess == gpo.preprocess and sams.training == gpo.training
    switches = ("mode", "latent_mask", "counterfactual_coeff", "grn_coeff", "sparsity_coeff")
    grn_only = ("hop", "fc_criteria", "grn_variant")  # without the GRN term they change nothing
    sizes = {name: getattr(gpo.model, name) for name in to_dict(gpo.model) if name not in switches + grn_only}
    assert sams.model == ModelConfig.sams_vae(**sizes)
    assert gpo.model.mode == "concat" and not gpo.model.latent_mask and gpo.model.grn_coeff == 100.0


#: What GPO-VAE+ changes (README, "GPO-VAE+"); everything else is the published family's.
PLUS_MODEL_CHANGES = {
    "mask_prior": 0.05,
    "n_particles": 1,
    "hop": 0,
    "mask_init": "effects",
    "mask_init_density": 0.05,
    "grn_target": "effects",
}


@pytest.mark.parametrize("dataset", [*DATASETS, "custom_published"])
def test_plus_twin_differs_only_in_its_documented_levers(dataset):
    gpo = load_run_config(CONFIG_DIR / f"gpo_vae_{dataset}.yaml")
    plus = load_run_config(CONFIG_DIR / f"gpo_vae_plus_{dataset}.yaml")
    assert plus.preprocess == gpo.preprocess and plus.evaluation == gpo.evaluation
    assert plus.model == gpo.model.replace(**PLUS_MODEL_CHANGES)
    changed = {k for k, v in to_dict(plus.training).items() if to_dict(gpo.training)[k] != v}
    assert changed <= {"lr", "batch_size"} and plus.training.lr > gpo.training.lr


@pytest.mark.parametrize(
    ("dataset", "latent", "basal_hidden", "fc_criteria", "sparsity"),
    [("rpe1", 200, 200, 0.5, 10.0), ("k562", 100, 200, 0.8, 5.0), ("adamson", 100, 400, 0.4, 1.0)],
)
def test_published_per_dataset_hyperparameters(dataset, latent, basal_hidden, fc_criteria, sparsity):
    config = load_run_config(CONFIG_DIR / f"gpo_vae_{dataset}.yaml")
    model = config.model
    assert (model.n_latent, model.basal_encoder_n_hidden, model.fc_criteria, model.sparsity_coeff) == (
        latent,
        basal_hidden,
        fc_criteria,
        sparsity,
    )
    assert (model.decoder_n_layers, model.decoder_n_hidden, model.embedding_encoder_n_layers) == (1, 400, 4)
    assert (model.mask_prior, model.hop, model.grn_coeff, model.counterfactual_coeff) == (0.3, 5, 100.0, 0.1)
    assert config.training == TrainingConfig()


def test_synthetic_config_is_scaled_down_and_says_so():
    text = (CONFIG_DIR / "gpo_vae_synthetic.yaml").read_text()
    config = load_run_config(CONFIG_DIR / "gpo_vae_synthetic.yaml")
    assert "SCALED DOWN" in text
    # a few minutes on 2 CPU cores instead of up to 2,000 epochs of the published size
    assert config.model.n_latent < ModelConfig().n_latent
    assert config.training.max_epochs < TrainingConfig().max_epochs / 10


@pytest.mark.parametrize(
    ("section", "body", "message"),
    [
        ("preprocess", "preprocess:\n  seeed: 1\n", "unknown key preprocess.seeed"),
        ("preprocess", "preprocess:\n  seed: one\n", "preprocess.seed: expected an integer"),
        ("preprocess", "preprocess:\n  counterfactual_cells: 0\n", "counterfactual_cells must be >= 1"),
        ("model", "model:\n  n_latnet: 8\n", "unknown key model.n_latnet"),
        ("model", "model:\n  hop: 2.5\n", "model.hop: expected an integer"),
        ("model", "model:\n  mask_prior: 1.5\n", "mask_prior 1.5 is not in (0, 1)"),
        ("training", "training:\n  learning_rate: 0.1\n", "unknown key training.learning_rate"),
        ("training", "training:\n  batch_size: '512'\n", "training.batch_size: expected an integer"),
        ("training", "training:\n  precision: 16\n", "training.precision: 16 is not one of"),
        ("training", "training:\n  lr: fast\n", "training.lr: expected a number, got 'fast'"),
        ("training", "training:\n  lr: -0.001\n", "lr must be positive"),
    ],
)
def test_bad_yaml_names_the_file_and_key(tmp_path, section, body, message):
    path = tmp_path / f"bad_{section}.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert message in str(err.value) and path.name in str(err.value)
    assert section in str(err.value)


def test_what_a_user_means_is_accepted(tmp_path):
    """YAML 1.1 (PyYAML) reads `3e-4` as text, and `precision: 32` is the option "32"."""
    path = tmp_path / "gotchas.yaml"
    path.write_text(
        "training:\n  lr: 3e-4\n  weight_decay: 1E-6\n  precision: 32\nmodel:\n  mask_prior: .3\n"
    )
    config = load_run_config(path)
    assert config.training.lr == 3e-4 and config.training.weight_decay == 1e-6
    assert config.training.precision == "32" and config.model.mask_prior == 0.3


def test_malformed_yaml_is_one_line_naming_the_place(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training:\n  lr: 0.1\n   batch_size: 8\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "line 3" in message


def test_run_config_round_trips():
    config = load_run_config(CONFIG_DIR / "gpo_vae_synthetic.yaml")
    assert from_dict(RunConfig, to_dict(config)) == config
