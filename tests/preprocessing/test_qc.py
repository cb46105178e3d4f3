"""QC metrics, MAD thresholds, stored-threshold judging, backends and chunked doublet detection."""

from __future__ import annotations

import json
import logging
import sys
import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gpo_vae.preprocessing import backend, doublets, qc


def _metrics(**columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame(columns, index=[f"c{i}" for i in range(len(next(iter(columns.values()))))])


# Hand-computed example (7 cells):
#   total_counts   median 1200, |dev| sorted 0,50,100,100,200,200,1100 → MAD 100 → low t3/4/5: 900/800/700
#   n_genes        median 520,  |dev| sorted 0,20,20,40,60,70,130      → MAD 40  → low t3/4/5: 400/360/320
#   pct_mt         median 5,    |dev| sorted 0,0,1,1,1,1,4             → MAD 1   → high t3/4/5: 8/9/10
#   pct_ribo       median 10,   |dev| sorted 0,0,0,1,1,2,2             → MAD 1   → high t3: 13
#   pct_hb         all zero → MAD 0 → threshold 0, nobody above it
HAND = _metrics(
    total_counts=[1000, 1100, 1200, 1300, 1400, 100, 1250],
    n_genes_by_counts=[500, 520, 540, 560, 580, 390, 450],
    pct_counts_mt=[4, 5, 6, 5, 4, 6, 9],
    pct_counts_ribo=[10, 12, 8, 10, 11, 9, 10],
    pct_counts_hb=[0, 0, 0, 0, 0, 0, 0],
)


def test_mad_thresholds_and_flags_match_hand_computation() -> None:
    thresholds = qc.fit_qc_thresholds(HAND, nmads=(3, 4, 5))
    expected = {  # metric: thresholds at t = 3, 4, 5
        "total_counts": (900, 800, 700),
        "n_genes_by_counts": (400, 360, 320),
        "pct_counts_mt": (8, 9, 10),
        "pct_counts_ribo": (13, 14, 15),
        "pct_counts_hb": (0, 0, 0),
    }
    for metric, values in expected.items():
        for t, value in zip((3, 4, 5), values, strict=True):
            assert thresholds.threshold(metric, t) == pytest.approx(value), (metric, t)
    assert thresholds.n_cells_fit == 7

    doublets = np.zeros(7, dtype=bool)
    doublets[2] = True
    flags = qc.apply_qc_thresholds(HAND, thresholds, doublets=doublets)
    on = lambda col: flags.index[flags[col]].tolist()  # noqa: E731
    assert on("qc_low_counts_t3") == on("qc_low_counts_t5") == ["c5"]  # 100 < 700
    assert on("qc_low_genes_t3") == ["c5"] and on("qc_low_genes_t4") == []  # 390 < 400 but not < 360
    assert on("qc_high_mt_t3") == ["c6"] and on("qc_high_mt_t4") == []  # 9 > 8; 9 > 9 is false (strict)
    assert on("qc_high_ribo_t3") == on("qc_high_hb_t3") == []
    assert on("qc_doublet") == ["c2"]
    assert on("qc_fail_t3") == ["c2", "c5", "c6"]
    assert on("qc_fail_t4") == on("qc_fail_t5") == ["c2", "c5"]
    assert flags["total_qc"].tolist() == [0, 0, 1, 0, 0, 1, 1]
    assert flags["total_qc"].dtype == np.int8


def test_fit_mask_restricts_the_cells_used() -> None:
    mask = np.array([True, True, True, False, False, False, False])  # counts 1000, 1100, 1200
    thresholds = qc.fit_qc_thresholds(HAND, nmads=(3,), fit_mask=mask)
    assert thresholds.threshold("total_counts", 3) == pytest.approx(1100 - 3 * 100)
    assert thresholds.n_cells_fit == 3
    with pytest.raises(ValueError, match="no cell"):
        qc.fit_qc_thresholds(HAND, fit_mask=np.zeros(7, dtype=bool))


def test_thresholds_round_trip_through_json() -> None:
    thresholds = qc.fit_qc_thresholds(HAND)
    restored = qc.QCThresholds.from_dict(json.loads(json.dumps(thresholds.to_dict())))
    assert restored == thresholds
    assert restored.nmads == (3.0, 4.0, 5.0)
    pd.testing.assert_frame_equal(
        qc.apply_qc_thresholds(HAND, restored), qc.apply_qc_thresholds(HAND, thresholds)
    )
    broken = thresholds.to_dict()
    del broken["thresholds"]["3"]["pct_counts_mt"]
    with pytest.raises(ValueError, match="pct_counts_mt"):
        qc.QCThresholds.from_dict(broken)


def test_stored_thresholds_judge_new_cells() -> None:
    stored = qc.QCThresholds.from_dict(json.loads(json.dumps(qc.fit_qc_thresholds(HAND).to_dict())))
    # t=3 thresholds: counts < 900, genes < 400, mt > 8, ribo > 13, hb > 0
    generated = _metrics(
        total_counts=[850, 950, 1000, 1000, 1000, 1000],
        n_genes_by_counts=[500, 399, 500, 500, 500, 500],
        pct_counts_mt=[5, 5, 8.0, 8.5, 5, 5],
        pct_counts_ribo=[10, 10, 10, 10, 13.5, 10],
        pct_counts_hb=[0, 0, 0, 0, 0, 0.1],
    )
    flags = qc.apply_qc_thresholds(generated, stored)
    assert flags["qc_low_counts_t3"].tolist() == [True, False, False, False, False, False]
    assert flags["qc_low_genes_t3"].tolist() == [False, True, False, False, False, False]
    assert flags["qc_high_mt_t3"].tolist() == [False, False, False, True, False, False]
    assert flags["qc_high_ribo_t3"].tolist() == [False, False, False, False, True, False]
    assert flags["qc_high_hb_t3"].tolist() == [False, False, False, False, False, True]
    assert flags["total_qc"].tolist() == [1, 1, 0, 1, 1, 1]
    assert not flags["qc_doublet"].any()
    # at t=4 (counts < 800, genes < 360, mt > 9, ribo > 14) only the hb cell still fails
    assert flags["qc_fail_t4"].tolist() == [False, False, False, False, False, True]


def test_metrics_gene_sets_hb_excludes_hbp() -> None:
    genes = ["MT-CO1", "RPS3", "RPL5", "HBB", "HBP1", "ACTB"]
    counts = np.array([[1, 2, 3, 4, 5, 5], [0, 0, 0, 0, 10, 10], [0, 0, 0, 0, 0, 0]], dtype=np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=genes))
    adata.obs_names = ["a", "b", "empty"]
    metrics = qc.compute_qc_metrics(adata, backend="cpu")
    assert list(metrics.columns) == list(qc.QC_METRICS)
    assert metrics.loc["a"].tolist() == pytest.approx([20, 6, 5.0, 25.0, 20.0])  # HBB counted, HBP1 not
    assert metrics.loc["b", "pct_counts_hb"] == 0.0  # only HBP1 expressed
    assert metrics.loc["b", "n_genes_by_counts"] == 2
    assert metrics.loc["empty", "total_counts"] == 0
    sets = qc.qc_gene_sets(["HBB", "HBA1", "HBP1", "HB", "MT-ND1", "RPL3", "XRPS"])
    assert sets.index[sets["hb"]].tolist() == ["HBB", "HBA1"]
    assert sets.index[sets["ribo"]].tolist() == ["RPL3"]
    assert "hb" not in adata.var.columns  # input untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_metrics_equal_scanpys_calculate_qc_metrics(dtype) -> None:
    """The cells' metrics without scanpy's per-gene ones: scanpy's values and dtypes, with stored
    zeros (scanpy drops them before counting genes), empty cells and no hb gene at all."""
    import scanpy as sc

    rng = np.random.default_rng(3)
    genes = ["MT-CO1", "MT-ND2", "RPS3", "RPL5", "ACTB", *[f"G{i}" for i in range(40)]]
    dense = rng.poisson(rng.gamma(0.5, 2.0, size=(300, len(genes)))).astype(dtype)
    dense[:5] = 0
    X = sp.csr_matrix(dense)
    X.data[::7] = 0  # stored zeros
    var = qc.qc_gene_sets(pd.Index(genes))
    names = pd.Index([f"c{i}" for i in range(300)])
    stored = X.nnz
    ours = qc._qc_metrics_cpu(X, names, var)
    light = ad.AnnData(X=X.copy(), obs=pd.DataFrame(index=names), var=var)
    expected, _ = sc.pp.calculate_qc_metrics(
        light, qc_vars=list(var.columns), percent_top=None, log1p=False, inplace=False
    )
    pd.testing.assert_frame_equal(ours, expected.loc[:, list(qc.QC_METRICS)], check_exact=True)
    assert X.nnz == stored  # the caller's matrix keeps its stored zeros


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "rapids_available", lambda: False)
    assert qc.resolve_backend("auto") == "cpu"
    assert qc.resolve_backend("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="`gpu` extra"):
        qc.resolve_backend("rapids")
    with pytest.raises(ValueError, match="backend"):
        qc.resolve_backend("gpu")  # type: ignore[arg-type]
    monkeypatch.setattr(backend, "rapids_available", lambda: True)
    assert qc.resolve_backend("auto") == "rapids"
    assert qc.resolve_backend("rapids") == "rapids"
    assert qc.resolve_backend("cpu") == "cpu"

    calls = []
    monkeypatch.setattr(qc, "_compute_qc_metrics_rapids", lambda *args: calls.append(args) or "gpu-result")
    adata = ad.AnnData(
        sp.csr_matrix(np.ones((2, 3), dtype=np.float32)), var=pd.DataFrame(index=["A", "B", "C"])
    )
    assert qc.compute_qc_metrics(adata, backend="auto") == "gpu-result" and len(calls) == 1
    assert qc.compute_qc_metrics(adata, backend="cpu")["total_counts"].tolist() == [3, 3]


def _fake_cuda(device_count) -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=device_count))
    return cupy


def test_rapids_available_needs_both_packages_and_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapids_singlecell", types.ModuleType("rapids_singlecell"))
    monkeypatch.setitem(sys.modules, "cupy", _fake_cuda(lambda: 1))
    assert qc.rapids_available()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cuda(lambda: 0))
    assert not qc.rapids_available()

    def no_driver() -> int:
        raise RuntimeError("cudaErrorNoDevice")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cuda(no_driver))
    assert not qc.rapids_available()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cuda(lambda: 1))
    monkeypatch.setitem(sys.modules, "rapids_singlecell", None)  # None in sys.modules: ImportError
    assert not qc.rapids_available()


def test_stratified_chunks_deal_every_perturbation_evenly() -> None:
    sizes = {"non-targeting": 203, "A": 50, "B": 7, "C": 1}
    labels = np.concatenate([[name] * n for name, n in sizes.items()])
    chunk = qc.stratified_chunks(labels, n_chunks=4, seed=3)
    assert set(np.unique(chunk)) <= {0, 1, 2, 3}
    for name, n in sizes.items():
        per_chunk = np.bincount(chunk[labels == name], minlength=4)
        assert per_chunk.sum() == n
        assert per_chunk.max() - per_chunk.min() <= 1, name
    np.testing.assert_array_equal(chunk, qc.stratified_chunks(labels, n_chunks=4, seed=3))
    assert not np.array_equal(chunk, qc.stratified_chunks(labels, n_chunks=4, seed=4))


def _planted_doublets(seed: int = 0, n_types: int = 4, per_type: int = 150, n_doublets: int = 50):
    """Cells of distinct expression programs plus heterotypic doublets (sums of two cells)."""
    rng = np.random.default_rng(seed)
    n_genes = 400
    programs = rng.gamma(0.4, 2.5, size=(n_types, n_genes))
    types_ = np.repeat(np.arange(n_types), per_type)
    singlets = rng.poisson(programs[types_] * rng.gamma(20, 0.05, size=(types_.size, 1)))
    first = rng.integers(0, n_types, n_doublets)
    second = (first + rng.integers(1, n_types, n_doublets)) % n_types
    parents_a = first * per_type + rng.integers(0, per_type, n_doublets)
    parents_b = second * per_type + rng.integers(0, per_type, n_doublets)
    X = np.vstack([singlets, singlets[parents_a] + singlets[parents_b]]).astype(np.float32)
    truth = np.r_[np.zeros(types_.size, dtype=bool), np.ones(n_doublets, dtype=bool)]
    labels = rng.choice(["non-targeting", "A", "B", "C"], size=X.shape[0])
    adata = ad.AnnData(
        sp.csr_matrix(X),
        obs=pd.DataFrame({"gene": labels}, index=[f"c{i}" for i in range(X.shape[0])]),
        var=pd.DataFrame(index=[f"G{g}" for g in range(n_genes)]),
    )
    return adata, truth


@pytest.fixture(scope="module")
def qc_doublet_data():
    return _planted_doublets()


def test_doublets_flagged_far_above_singlets(qc_doublet_data) -> None:
    adata, truth = qc_doublet_data
    report = qc.detect_doublets_report(adata, n_chunks=2, seed=0, backend="cpu", show_progress=False)
    assert report.n_skipped == 0
    assert report.predicted[truth].mean() > 0.7
    assert report.predicted[~truth].mean() < 0.05
    np.testing.assert_array_equal(report.chunk, qc.stratified_chunks(adata.obs["gene"], 2, seed=0))
    again = qc.detect_doublets(adata, n_chunks=2, seed=0, backend="cpu", show_progress=False)
    np.testing.assert_array_equal(again, report.predicted)  # deterministic per seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scrublet_lean_gene_filter_gives_scrublets_own_genes_scores_and_calls(seed: int) -> None:
    """The chunk's scrublet run (its gene filter and v-scores without scrublet's copies of the
    normalised counts) equals ``Scrublet.scrub_doublets()``: the same genes, v-scores and gene
    moments, the normalised counts, every score bit for bit, the same calls; sparse counts with
    genes never expressed and genes below 3 counts."""
    import scrublet
    from scrublet.helper_functions import filter_genes, get_vscores

    adata, _ = _planted_doublets(seed=seed, per_type=120 + 20 * seed)
    X = adata.X.toarray()
    X[:, :7] = 0  # genes no cell expresses
    X[:, 7:12] = np.minimum(X[:, 7:12], 2)  # expressed, never at 3 counts
    X = sp.csr_matrix(X)
    reference = scrublet.Scrublet(sp.csc_matrix(X), expected_doublet_rate=0.05, random_state=seed)
    scores, predicted = reference.scrub_doublets(verbose=False)
    ours_predicted, ours_scores = doublets._scrublet_cpu(X.copy(), seed, 0.05)
    np.testing.assert_array_equal(ours_scores, scores)
    np.testing.assert_array_equal(ours_predicted, predicted)
    normalised = scrublet.Scrublet(sp.csc_matrix(X))
    scrublet.helper_functions.pipeline_normalize(normalised)
    E = normalised._E_obs_norm
    stored_zero = X.copy()
    stored_zero.data[::50] = 0  # explicit zeros: scipy's product does not store them
    for counts in (X, stored_zero):
        for total in (None, 1e6):
            theirs, ours = scrublet.Scrublet(sp.csc_matrix(counts)), scrublet.Scrublet(sp.csc_matrix(counts))
            scrublet.helper_functions.pipeline_normalize(theirs, postnorm_total=total)
            doublets._scrublet_normalize(ours, postnorm_total=total)
            a, b = theirs._E_obs_norm, ours._E_obs_norm
            assert a.format == b.format == "csc" and a.dtype == b.dtype
            for field in ("data", "indices", "indptr"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(doublets._scrublet_gene_filter(E), filter_genes(E))
    vscores, genes = doublets._scrublet_vscores(E)
    theirs_vscores, _, _, theirs_genes, *_ = get_vscores(E)
    np.testing.assert_array_equal(genes, theirs_genes)
    np.testing.assert_array_equal(vscores, theirs_vscores)
    for block_values in (1, 97, 10**9):  # a column at a time, a few columns, all at once
        mean, mean_square = doublets._column_moments(E, block_values)
        np.testing.assert_array_equal(mean, E.mean(axis=0).A.ravel())
        squared = E.copy()
        squared.data **= 2
        np.testing.assert_array_equal(mean_square, squared.mean(axis=0).A.ravel())
    for min_counts, min_cells in [(1, 60), (5, 20), (20, 3), (3, 150)]:
        for pctl in (50, 85):
            ours = doublets._scrublet_gene_filter(E, min_counts, min_cells, pctl)
            theirs = filter_genes(E, min_counts=min_counts, min_cells=min_cells, min_vscore_pctl=pctl)
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_knn_graph_in_threads_gives_scrublets_own_neighbours(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """The annoy queries split over threads (any count, blocks of unequal size) return scrublet's
    own ``get_knn_graph`` neighbours, row for row; other settings go to scrublet's function."""
    from scrublet.helper_functions import get_knn_graph

    monkeypatch.setenv("GPO_VAE_THREADS", str(threads))  # the blocks and the threads that run them
    X = np.random.default_rng(threads).normal(size=(1001, 12))
    for seed in (0, 3):
        theirs = get_knn_graph(X, k=15, approx=True, return_edges=False, random_seed=seed)
        np.testing.assert_array_equal(doublets._knn_graph(X, 15, "euclidean", True, False, seed), theirs)
    exact = get_knn_graph(X, k=5, approx=False, return_edges=False)
    np.testing.assert_array_equal(doublets._knn_graph(X, 5, "euclidean", False, False), exact)


def test_scrublet_failure_on_tiny_chunks_is_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    adata, _ = _planted_doublets(n_types=2, per_type=5, n_doublets=0)
    with caplog.at_level(logging.WARNING, logger=doublets.__name__):
        report = qc.detect_doublets_report(adata, n_chunks=2, backend="cpu", show_progress=False)
    assert report.n_skipped == 2 and [s["chunk"] for s in report.skipped] == [0, 1]
    assert not report.predicted.any() and np.isnan(report.scores).all()
    assert "skipped 2 of 2 chunks" in caplog.text


def test_run_qc_composes_the_stage(qc_doublet_data) -> None:
    adata, _ = qc_doublet_data
    fit = np.arange(adata.n_obs) % 5 != 0
    flags, thresholds, metrics = qc.run_qc(
        adata, fit_mask=fit, backend="cpu", n_chunks=2, show_progress=False
    )
    assert thresholds.n_cells_fit == fit.sum()
    assert thresholds == qc.fit_qc_thresholds(metrics, fit_mask=fit)
    assert flags.index.equals(adata.obs_names)
    assert (flags["total_qc"] == flags["qc_fail_t3"].astype(np.int8)).all()
    assert flags["qc_doublet"].any() and (flags.loc[flags["qc_doublet"], "total_qc"] == 1).all()
    assert {"doublet_score", "doublet_chunk", "doublet_chunk_skipped"} <= set(metrics.columns)
    assert not metrics["doublet_chunk_skipped"].any()
    no_doublets, _, _ = qc.run_qc(adata, doublets=False, backend="cpu")
    assert not no_doublets["qc_doublet"].any()


def test_scrublet_zscore_equals_scrublets_in_values_and_memory_order() -> None:
    """The z-scores made dense once and scaled in place equal scrublet's ``pipeline_zscore``
    bit for bit, column-major as scrublet leaves them (PCA's sums depend on the order), with a
    gene that no cell expresses (scrublet's 0 · inf = NaN)."""
    import types

    from scrublet.helper_functions import pipeline_zscore

    rng = np.random.default_rng(4)
    obs = sp.random(300, 40, density=0.3, random_state=rng, format="csc") * 50
    obs[:, 5] = 0
    sim = sp.random(600, 40, density=0.5, random_state=rng, format="csc") * 50
    theirs = types.SimpleNamespace(_E_obs_norm=obs.copy(), _E_sim_norm=sim.copy())
    ours = types.SimpleNamespace(_E_obs_norm=obs.copy(), _E_sim_norm=sim.copy())
    with np.errstate(divide="ignore", invalid="ignore"):
        pipeline_zscore(theirs)
    doublets._scrublet_zscore(ours)
    for name in ("_E_obs_norm", "_E_sim_norm"):
        a, b = getattr(theirs, name), getattr(ours, name)
        assert type(a) is type(b) is np.ndarray and a.dtype == b.dtype
        assert a.flags.f_contiguous and b.flags.f_contiguous
        assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(ours._E_obs_norm[:, 5]).all()
