"""Baseline score matrices: |corr(ΔX)| equals numpy's, random is seeded, masks are checked."""

from __future__ import annotations

import numpy as np
import pytest

from gpo_vae.grn import baselines
from gpo_vae.grn.baselines import correlation_scores, mask_scores, random_scores


def test_correlation_scores_equal_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    delta_x = rng.gamma(1.0, size=(300, 8)).astype(np.float32)
    delta_x[:, 1] = 2 * delta_x[:, 0] + 0.01 * rng.normal(size=300)
    delta_x[:, 2] = -delta_x[:, 0]
    got = correlation_scores(delta_x)
    expected = np.abs(np.corrcoef(delta_x.astype(np.float64), rowvar=False))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert got[0, 2] == pytest.approx(1.0)  # the sign is dropped
    monkeypatch.setattr(baselines, "_BLOCK_VALUES", 24)  # three rows per block
    np.testing.assert_allclose(correlation_scores(delta_x), got, rtol=1e-10, atol=1e-12)


def test_constant_column_scores_zero() -> None:
    delta_x = np.column_stack([np.arange(5.0), np.ones(5), np.arange(5.0) ** 2])
    got = correlation_scores(delta_x)
    assert (got[1] == 0).all() and (got[:, 1] == 0).all()
    assert got[0, 2] == pytest.approx(np.corrcoef(np.arange(5.0), np.arange(5.0) ** 2)[0, 1])
    with pytest.raises(ValueError, match="N ≥ 2"):
        correlation_scores(np.ones((1, 3)))


def test_random_scores_seeded_uniform() -> None:
    first = random_scores(50, seed=1)
    assert first.shape == (50, 50) and first.min() >= 0 and first.max() < 1
    assert np.array_equal(first, random_scores(50, seed=1))
    assert not np.array_equal(first, random_scores(50, seed=2))
    assert abs(first.mean() - 0.5) < 0.03  # 2,500 uniforms: SD of the mean 0.0058


def test_mask_scores_checks() -> None:
    probabilities = np.full((3, 3), 0.25, dtype=np.float32)
    got = mask_scores(probabilities, n_nodes=3)
    assert got.dtype == np.float64 and got is not probabilities and (got == 0.25).all()
    with pytest.raises(ValueError, match="square"):
        mask_scores(np.ones((2, 3)))
    with pytest.raises(ValueError, match="for 4 nodes"):
        mask_scores(probabilities, n_nodes=4)
    with pytest.raises(ValueError, match="NaN"):
        mask_scores(np.full((2, 2), np.nan))
