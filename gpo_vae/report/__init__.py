"""One self-contained HTML report per run, built only from the evaluation directory.

``build_report(eval_dir)`` reads the files below and writes ``eval_dir/report.html``: inline
CSS, figures as ``data:image/png;base64`` URIs, no external resource. Every file is optional;
an absent file makes its section say "not computed". A present file missing a required column
raises ``ValueError``. Extra columns are ignored.

Evaluation-directory contract
-----------------------------
CSV files are written with a header, no index column (except ``grn_mask.csv``), ``NaN`` as an
empty cell (pandas' default). Name columns are text (a gene called ``NA`` stays a name).

``prediction_metrics.csv``: one row per (method, reference, subset, perturbation).
    ``method``: ``model``, ``sams_vae`` (when trained), ``mean_baseline``, ``control_baseline``,
    ``split_half_ceiling``. ``reference``: ``heldout_test`` (ATE of test cells only) or
    ``all_cells`` (the published reference). ``subset``: ``all_cells`` or ``qc_pass``.
    ``perturbation``. Metrics (required: ``pearson``, ``r2``; the others as computed):
    ``pearson``, ``r2``, ``pearson_top20``, ``r2_top20``, ``jaccard_top20``, ``jaccard_top50``
    (any column named ``pearson|r2|jaccard`` + optional ``_top<k>`` is shown). The summary
    (mean, median, count per method) is computed by the report from this table.
``ate_scatter.csv``: ``perturbation``, ``gene``, ``observed`` (held-out ATE), ``predicted``
    (model), optional ``mean_baseline``. Every gene of the chosen perturbations; one panel per
    perturbation in order of first appearance (at most 12 drawn).
``qc_ratio.csv``: ``t`` (3, 4, 5), ``pass_ratio_generated``, ``pass_ratio_data``.
``summary_stats_agreement.csv``: ``quantity`` (``knockdown``, ``n_degs``), ``spearman``, ``n``.
``summary_stats_points.csv``: ``perturbation``, ``quantity`` (as above), ``predicted``,
    ``reported`` (the per-perturbation values behind the correlations; drawn as scatter).
``grn_mask.csv``: T × T mask probabilities in [0, 1]; first column = source node names (the
    index), header = target node names, same names in the same order.
``grn_nodes.csv``: ``node``, ``kind`` (``P`` perturbed gene, ``A`` downstream DEG node); the
    nodes of the mask. Without it the heatmap keeps the mask's order and nodes are uncoloured.
``grn_edges.csv``: ``source``, ``target``, ``p`` (every edge above the threshold, as
    :func:`gpo_vae.grn.curves.edges_from_probabilities`: 0.5, or the calibrated threshold that
    ``run.json`` records as ``metrics.grn_threshold``, :mod:`gpo_vae.grn.calibration`); the report
    draws the top 40 by ``p``.
``grn_statistical.csv``: one row per (method, k): ``method`` (``model``, ``sams_vae``,
    ``correlation``, ``random``, ...), ``k`` (``p>0.5``, or ``p>`` the calibrated threshold, = the
    method's thresholded graph, or an integer K = its top-K edges; include K = the model's edge count for every method
    so rows match), ``n_edges``, ``n_tested``, ``true_positives``, ``false_positives``,
    ``precision``, ``mean_wasserstein``, ``path_mean_wasserstein``, ``false_omission_rate``,
    ``negative_mean_wasserstein`` (:func:`gpo_vae.grn.statistical.summarise_tests` names).
``grn_reference.csv``: one row per (method, network): ``precision``, ``recall`` (of the
    thresholded graph), ``auprc``, ``auroc``, ``n_positive``, ``positive_rate``, ``reason`` (empty
    when every value is defined); optional ``n_predicted``, ``true_positives``.
``grn_pr_curves.csv``: ``method``, ``network``, ``recall``, ``precision`` (at most ~2,000
    points per curve; the report thins longer ones evenly).
``unseen_metrics.csv``: one row per (kind, method, perturbation) for the labels no training cell
    carries (:mod:`gpo_vae.evaluation.unseen`): ``kind`` ``combination`` (a held-out ``A+B``) or
    ``single`` (a held-out gene); ``method`` ``model``, ``model_own_node``, ``model_neighbours``
    (or ``model_regulators``), ``additive``, ``matching_mean``, ``noncontrol_mean``,
    ``control_baseline``, ``linear_embedding``, ``regulator_regression``, ``grn_neighbour_mean``, ``network_neighbour_mean``, the same for
    ``sams_vae``. Required: ``pearson``, ``r2``; optional numbers ``pearson_*``, ``r2_*``,
    ``rank``, ``rank_normalised``, ``interaction_*`` (``interaction_significant`` is text),
    ``discrimination_l1``, ``centroid_accuracy``.
``scaled_scores.csv``: one row per (task, metric, method) (:mod:`gpo_vae.evaluation.scaled`):
    ``task`` ``unseen_pairs``, ``unseen_singles`` or ``heldout_cells``; ``role`` ``model``,
    ``baseline`` or ``replicate``; ``baseline`` (the method at 0); numbers ``n``, ``mean``,
    ``mean_low``, ``mean_high``, ``b``, ``r``, ``headroom``, ``scaled``, ``scaled_low``,
    ``scaled_high``. The headline shows each task's headline metric.
``unseen_interaction_scatter.csv``: ``perturbation`` (a pair), ``gene``, ``observed``,
    ``predicted``: the model's and the data's interaction (minus the additive prediction) on
    each pair's top-20 DE genes.
``unseen_neighbours.csv``: ``method``, ``gene``, ``neighbour``, ``weight``, optional ``mode``:
    the seen genes an unseen gene is dosed through.
``perturbation_table.csv``: the preprocessing filters' table, one row per perturbation label:
    ``perturbation``, ``cells``, ``measured`` (target measured: ``yes``, ``no``, ``1 of 2``),
    ``status`` (``kept`` or the filter that removed it), ``reason``; optional
    ``on_target_change``, ``degs``, ``cells_filtered``, ``cells_on_target``.
``screen.json``: what preprocessing decided about the screen (all keys optional): ``modality``
    (object: ``resolved``, ``requested``, ``basis``), ``pairing`` (``features``, ``n_features``,
    ``measured_targets``, ``within_batch``), ``batches`` (object with ``key`` and ``names``, or
    null), ``layout`` (the file's layout and what reading it decided), ``splits``, ``nodes``.
``run.json``: a JSON object. Read keys (all optional): ``dataset``, ``seed``, ``created``,
    ``code_version``, ``python``, ``platform``, ``config`` (object), ``packages`` (object
    name → version), ``data`` (object: ``n_cells``, ``n_test_cells``, ``n_genes``,
    ``n_perturbations``, ``n_nodes``, ``n_perturbed_nodes``), ``metrics`` (object of numbers,
    e.g. ``test_iwelbo``, shown as headline cards). Every key appears in the provenance table;
    ``{**gpo_vae.io.provenance(config), "dataset": ..., "seed": ..., "data": ..., ...}`` fits.
"""

from gpo_vae.report.build import REPORT_FILE, build_report
from gpo_vae.report.tables import EvaluationTables, load_tables
from gpo_vae.report.verdict import Verdict, baseline_verdicts

__all__ = ["REPORT_FILE", "EvaluationTables", "Verdict", "baseline_verdicts", "build_report", "load_tables"]
