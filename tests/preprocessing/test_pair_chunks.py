"""OT pairing in chunks of perturbations: the same partners and artifact, spread as redun jobs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from gpo_vae.config import from_dict
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.from_file import build_artifact
from gpo_vae.preprocessing.pair_chunks import pair_chunk_partners, plan_pairing_of_file
from gpo_vae.preprocessing.pairing import partner_rows
from tests.preprocessing.test_deg_chunks import ProcessRuns

SHEET = "TabS_synthetic_summary_stat"


def _inputs(screen, config: PreprocessConfig | None = None) -> tuple:
    return screen["counts"], screen["summary_stats"], SHEET, config or PreprocessConfig()


def _pairing(plan) -> dict:
    partners = {}
    for chunk in plan.chunks:
        partners.update(pair_chunk_partners(chunk.spec))
    return {"partners": partners, "record": plan.record}


@pytest.mark.parametrize(
    ("preset", "features", "per_chunk"),
    [
        ("default", "targets", 4),
        ("batches", "targets", 1),
        ("panel", "auto", 10_000),
        ("default", "capped", 3),
    ],
)
def test_the_artifact_built_from_chunked_partners_has_the_same_bytes(preset, features, per_chunk, tmp_path):
    """Every perturbed cell gets the partner the whole run gives it, so the artifact (partners,
    ΔX, the pairing record) is the same file: on the targets' features, within cell lines, and
    on principal components (``panel`` measures none of its targets), and with fewer candidate
    controls than a split holds (``pairing.max_controls``)."""
    screen = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset(preset))
    layout = (
        ScreenLayout(batch_key=SyntheticConfig.preset(preset).batch_column) if preset == "batches" else None
    )
    settings = {"max_controls": 40} if features == "capped" else {"features": features}
    config = from_dict(PreprocessConfig, {"pairing": settings}) if features != "targets" else None
    inputs = _inputs(screen, config)
    plan = plan_pairing_of_file(*inputs, per_chunk, tmp_path / "pairs", layout)
    groups = [g for chunk in plan.chunks for g in chunk.groups]
    assert len(groups) == len(set(groups)) and all(len(c.groups) <= per_chunk for c in plan.chunks)
    assert len(plan.chunks) == -(-len(groups) // per_chunk)
    pairing = _pairing(plan)
    whole = build_artifact(*inputs, tmp_path / "whole", layout, progress=False, print_table=False)
    chunked = build_artifact(
        *inputs, tmp_path / "chunked", layout, progress=False, print_table=False, pairing=pairing
    )
    assert (whole / "artifact.h5ad").read_bytes() == (chunked / "artifact.h5ad").read_bytes()
    obs = ad.read_h5ad(whole / "artifact.h5ad", backed="r").obs
    perturbed = obs["gene"].astype(str).to_numpy() != "non-targeting"
    assert len(pairing["partners"]) == perturbed.sum()
    np.testing.assert_array_equal(partner_rows(pairing["partners"], obs.index, perturbed), obs["partner"])
    if features == "capped":  # the cap binds: a split has more controls than the partners drawn from it
        split = obs["split"].to_numpy()
        partner_split = split[obs["partner"].to_numpy()[perturbed]]
        used = {
            name: np.unique(obs["partner"].to_numpy()[perturbed][partner_split == name]).size
            for name in set(split)
        }
        held = {name: int((~perturbed & (split == name)).sum()) for name in set(split)}
        assert max(used.values()) <= 40 < max(held.values())


def test_partners_of_another_screen_are_named_not_used():
    names = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"no partner for 1 perturbed cells .*'b'.*--no-cache"):
        partner_rows({"c": "a"}, names, np.array([False, True, True]))
    with pytest.raises(ValueError, match=r"no cell of this screen .*'zz'"):
        partner_rows({"b": "zz"}, names, np.array([False, True, False]))


def test_a_missing_spec_or_feature_file_says_how_to_recover(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"spec of this pairing chunk is gone.*--no-cache"):
        pair_chunk_partners(tmp_path / "gone.pkl")
    screen = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset("default"))
    plan = plan_pairing_of_file(*_inputs(screen), 100, tmp_path / "pairs")
    (tmp_path / "pairs").joinpath(next(p.name for p in (tmp_path / "pairs").glob("features-*.npy"))).unlink()
    with pytest.raises(FileNotFoundError, match="pairing features of this chunk are gone"):
        pair_chunk_partners(plan.chunks[0].spec)


def test_the_process_executor_spreads_pairing_chunks_and_a_changed_chunk_reruns_alone(tmp_path):
    """Chunks run as pair_chunk jobs on redun's process executor; after one perturbation's cells
    change in the screen file (same path), only its chunk is paired again, and the artifact
    built from the partners is the one the unchunked run builds."""
    from tasks.preprocess import in_chunks, preprocessed

    runs = ProcessRuns(tmp_path)
    out = str(tmp_path / "out")
    first, ran = runs.run(in_chunks("pairing", runs.dataset, {}, out, "process", 8))
    assert ran.count("pair_chunk") >= 3 and "plan_pair_chunks" in ran
    assert first["record"]["features"] == "targets" and len(first["partners"]) > 100

    _, cells = runs.cells_of_first_perturbation()
    adata = runs.add_a_count(cells)  # one gene, one perturbation
    second, ran = runs.run(in_chunks("pairing", runs.dataset, {}, out, "process", 8))
    assert "plan_pair_chunks" in ran and ran.count("pair_chunk") == 1
    changed = set(adata.obs_names[cells])
    unchanged = {c: p for c, p in first["partners"].items() if c not in changed}
    assert {c: second["partners"][c] for c in unchanged} == unchanged

    chunked, _ = runs.run(preprocessed(runs.dataset, {}, out, pairing_chunk_size=8, executor="process"))
    whole = build_artifact(*_inputs(runs.screen), tmp_path / "whole", progress=False, print_table=False)
    assert open(chunked.path, "rb").read() == (whole / "artifact.h5ad").read_bytes()
