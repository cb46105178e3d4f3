"""Figures of the perturbation-prediction sections, each returned as PNG bytes.

Figures are built on :class:`matplotlib.figure.Figure` (the Agg canvas), never through pyplot,
so no global figure state or GUI backend is involved; styling is applied with ``rc_context``
so the caller's matplotlib settings are left alone. PNG metadata carries no software version,
which keeps a rebuilt report byte-identical.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gpo_vae.report.html import format_number

DPI = 110
#: Perturbations drawn in the ATE scatter at most.
MAX_SCATTER_PANELS = 12
#: The mean baseline's open rings in the ATE scatter: darker than its grey, to show over the model's points.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e4e7eb",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
}
METHOD_ORDER = (
    "model",
    "sams_vae",
    "mean_baseline",
    "noncontrol_mean",
    "control_baseline",
    "split_half_ceiling",
    "correlation",
    "effect_z",
    "deconvolution",
    "sparse_inverse",
    "model_init",
    "random",
)
METHOD_LABELS = {
    "model": "the model",
    "sams_vae": "SAMS-VAE",
    "mean_baseline": "mean baseline",
    "noncontrol_mean": "non-control mean",
    "control_baseline": "control baseline",
    "split_half_ceiling": "split-half ceiling",
    "correlation": "|corr ΔX| baseline",
    "effect_z": "|effect z| baseline",
    "deconvolution": "network deconvolution of |effect z|",
    "sparse_inverse": "sparse inverse of effect z (inspre-style)",
    "random": "random graph",
    "additive": "additive (A + B)",
    "matching_mean": "matching mean",
    "grn_neighbour_mean": "GRN-neighbour mean",
    "network_neighbour_mean": "network-neighbour mean",
    "model_own_node": "the model, own untrained node",
    "model_neighbours": "the model, dosed through GRN neighbours",
    "model_regulators": "the model, dosed through regulators",
    "regulator_regression": "regulator regression",
    "sams_vae_own_node": "SAMS-VAE, own untrained node",
    "model_init": "the model's mask before training",
    "linear_embedding": "linear model on gene embeddings",
    "replicate": "replicate (full size)",
}
#: The target gene of a perturbation in the per-perturbation scatter.
TARGET_COLOR = "#c0392b"
#: Colours of categories without a meaning of their own (e.g. one per pair).
DISCRETE_COLORS = ("#1f5f99", "#d9822b", "#2e8540", "#8e44ad", "#c0392b", "#16a085", "#b7950b", "#34495e")
_COLORS = {
    "model": "#1f5f99",
    "sams_vae": "#d9822b",
    "mean_baseline": "#7b8794",
    "noncontrol_mean": "#b7950b",
    "control_baseline": "#a0aab4",
    "split_half_ceiling": "#2e8540",
    "correlation": "#8e44ad",
    "effect_z": "#16a085",
    "deconvolution": "#c0392b",
    "sparse_inverse": "#f1c40f",
    "model_init": "#34495e",
    "random": "#a0aab4",
}
_EXTRA_COLORS = ("#c0392b", "#16a085", "#f1c40f", "#34495e", "#e67e22")
METRIC_LABELS = {
    "pearson": "Pearson r",
    "r2": "R²",
    "jaccard": "Jaccard",
    "pearson_specific": "Pearson r minus the shared shift",
    "discrimination_l1": "discrimination (cell-eval, L1)",
    "centroid_accuracy": "centroid accuracy",
}
R2_FLOOR = -1.0  # R² is unbounded below; clip so one bad perturbation does not flatten the plot


def method_label(method: str) -> str:
    """Readable name of a method key (unknown keys as given; ``network:<name>``: a known network)."""
    if method.startswith("network:"):
        return f"known network {method.removeprefix('network:')}"
    return METHOD_LABELS.get(method, method)


def method_color(method: str) -> str:
    """A fixed colour per method, the same in every figure."""
    if method in _COLORS:
        return _COLORS[method]
    return _EXTRA_COLORS[sum(map(ord, method)) % len(_EXTRA_COLORS)]


def ordered_methods(methods: Sequence[str]) -> list[str]:
    """Distinct methods, known ones in :data:`METHOD_ORDER`, then the rest alphabetically."""
    distinct = list(dict.fromkeys(methods))
    known = [m for m in METHOD_ORDER if m in distinct]
    return known + sorted(set(distinct) - set(known))


def metric_label(metric: str) -> str:
    """``pearson_top20`` → ``Pearson r, top-20 DE genes``."""
    family, _, top = metric.partition("_top")
    label = METRIC_LABELS.get(family, family)
    if family in ("discrimination_l1", "centroid_accuracy"):
        return label  # scored among the perturbations, not over a gene set
    return f"{label}, top-{top} DE genes" if top else f"{label}, all genes"


def render(draw: Callable[[Figure], None], size: tuple[float, float], dpi: int = DPI) -> bytes:
    """PNG bytes of a figure of ``size`` inches filled by ``draw``."""
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def grid_shape(n: int, max_columns: int) -> tuple[int, int]:
    """(rows, columns) of a small-multiples grid of ``n`` panels."""
    columns = max(1, min(n, max_columns))
    return -(-n // columns), columns


def point_style(n: int, spread: float = 60.0) -> tuple[float, float]:
    """Marker size and opacity for ``n`` points: smaller and fainter as they crowd.

    ``spread`` sets how fast opacity falls (overlapping clouds need less than jittered strips).
    """
    if n <= 200:
        return 10.0, 0.7
    return float(np.clip(2000 / n, 2.0, 8.0)), float(np.clip(spread / np.sqrt(n), 0.12, 0.6))


def pearson_of(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _identity_limits(ax: Axes, *arrays: np.ndarray) -> None:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="#9aa5b1", lw=0.8, ls="--", zorder=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")


def ate_scatter_figure(scatter: pd.DataFrame, max_panels: int = MAX_SCATTER_PANELS) -> bytes:
    """Predicted vs observed held-out ATE per gene, one panel per perturbation (file order).

    The model's points only (the training mean's r is in each title: the ranked figure compares
    the two); the target gene, when measured, is a red diamond named in the title with its
    predicted and observed change; the identity line is dashed.
    """
    perturbations = list(dict.fromkeys(scatter["perturbation"]))[:max_panels]
    rows, columns = grid_shape(len(perturbations), 4)
    has_baseline = "mean_baseline" in scatter.columns
    targets = (
        scatter["target"].astype(str).str.lower().eq("true")
        if "target" in scatter.columns
        else pd.Series(False, index=scatter.index)
    )

    def draw(figure: Figure) -> None:
        axes = figure.subplots(rows, columns, squeeze=False)
        for ax in axes.ravel()[len(perturbations) :]:
            ax.set_visible(False)
        groups = dict(tuple(scatter.groupby("perturbation", sort=False)))
        for ax, name in zip(axes.ravel(), perturbations, strict=False):
            part = groups[name]
            observed = part["observed"].to_numpy()
            predicted = part["predicted"].to_numpy()
            size, alpha = point_style(observed.size, spread=15.0)
            title = f"{name}\nmodel r = {format_number(pearson_of(observed, predicted))}"
            if has_baseline:
                baseline = part["mean_baseline"].to_numpy()
                title += f", training mean {format_number(pearson_of(observed, baseline))}"
            ax.scatter(observed, predicted, s=size, c=method_color("model"), alpha=alpha, lw=0)
            own = targets.loc[part.index].to_numpy()
            for gene, x, y in zip(part["gene"][own], observed[own], predicted[own], strict=True):
                ax.scatter([x], [y], s=36, marker="D", c=TARGET_COLOR, edgecolors="white", lw=0.6, zorder=3)
                title += f"\ntarget {gene}: {format_number(y)} (observed {format_number(x)})"
            _identity_limits(ax, observed, predicted)
            ax.set_title(title, fontsize=8.5)
        for ax in axes[-1, :]:
            ax.set_xlabel("observed ATE (held-out cells)")
        for ax in axes[:, 0]:
            ax.set_ylabel("predicted ATE")

    return render(draw, (3.0 * columns, 3.4 * rows))


def ranked_r_figure(held: pd.DataFrame, methods: Sequence[str]) -> bytes:
    """Each perturbation's held-out ATE Pearson r for ``methods`` (rows of ``prediction_metrics.csv``
    on one reference and subset), perturbations ranked by the first method's r: where a model
    wins or loses against a baseline, perturbation by perturbation, with no label to overlap."""
    wide = held.pivot_table(index="perturbation", columns="method", values="pearson", aggfunc="first")
    methods = [m for m in methods if m in wide.columns]
    wide = wide.sort_values(methods[0], kind="stable", na_position="first")
    x = np.arange(len(wide))

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        for method in methods:
            values = wide[method].to_numpy(dtype=float)
            style = (
                {"marker": "o", "ms": 4.5, "ls": ""}
                if method == "model"
                else {"marker": "_", "ms": 9, "ls": ""}
            )
            ax.plot(x, values, color=method_color(method), label=method_label(method), mew=1.6, **style)
        ax.axhline(0, color="#9aa5b1", lw=0.8)
        ax.set_xlabel(f"perturbation, ranked by the {method_label(methods[0])}'s r ({len(wide)} in all)")
        ax.set_ylabel("Pearson r, held-out ATE")
        ax.set_xlim(-1, len(wide))
        ax.set_xticks([])
        figure.legend(loc="outside right upper", fontsize=8, frameon=False)

    return render(draw, (8.0, 3.2))


def _box_and_points(ax: Axes, data: list[np.ndarray], names: list[str], floor: float | None) -> int:
    """Boxes and jittered points of each method's values; returns how many fell below ``floor``."""
    rng = np.random.default_rng(0)  # the same jitter on every rebuild
    positions = np.arange(len(data))
    shown = data if floor is None else [np.maximum(v, floor) for v in data]
    clipped = 0
    for x, values, drawn, method in zip(positions, data, shown, names, strict=True):
        jitter = x + rng.uniform(-0.2, 0.2, values.size)
        low = values < floor if floor is not None else np.zeros(values.size, dtype=bool)
        clipped += int(low.sum())
        size, alpha = point_style(values.size)
        color = method_color(method)
        ax.scatter(jitter[~low], drawn[~low], s=size, color=color, alpha=alpha, lw=0, zorder=1)
        # a down-pointing marker: the value is lower than drawn
        ax.scatter(jitter[low], drawn[low], s=2 * size, marker="v", color=color, alpha=alpha, lw=0, zorder=1)
    # unfilled boxes over the points, so thousands of perturbations cannot hide the quartiles
    dark = {"color": "#1f2933", "lw": 1.1}
    ax.boxplot(
        shown,
        positions=positions,
        widths=0.6,
        showfliers=False,
        boxprops=dark,
        whiskerprops=dark,
        capprops=dark,
        medianprops={"color": "#1f2933", "lw": 2.2},
        zorder=3,
    )
    # 40°, anchored at the tick: each label ends under its own box, none runs into the next
    ax.set_xticks(
        positions, [method_label(m) for m in names], rotation=40, ha="right", rotation_mode="anchor"
    )
    ax.grid(axis="x", visible=False)
    return clipped


def metric_distribution_figure(metrics: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """Per-perturbation metric values per method: box plot plus the points (jittered, seeded).

    ``metrics`` is one (reference, subset) slice of ``prediction_metrics.csv``. Methods without
    a finite value for a metric (the control baseline's Pearson r) are left out of that panel.
    R² below :data:`R2_FLOOR` is drawn at the floor as ▼ and counted in the panel title.
    """
    methods = ordered_methods(metrics["method"].tolist())
    rows, n_columns = grid_shape(len(columns), 3)

    def draw(figure: Figure) -> None:
        axes = figure.subplots(rows, n_columns, squeeze=False)
        for ax in axes.ravel()[len(columns) :]:
            ax.set_visible(False)
        for ax, metric in zip(axes.ravel(), columns, strict=False):
            data, names = [], []
            for method in methods:
                values = metrics.loc[metrics["method"] == method, metric].to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                if values.size:
                    data.append(values)
                    names.append(method)
            title = metric_label(metric)
            if not data:
                ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
            else:
                clipped = _box_and_points(ax, data, names, R2_FLOOR if metric.startswith("r2") else None)
                if clipped:
                    title += f"\n({clipped} values below {R2_FLOOR:g} drawn at {R2_FLOOR:g} as ▼)"
            ax.set_title(title)

    return render(draw, (3.7 * n_columns, 3.1 * rows))


def qc_ratio_figure(qc: pd.DataFrame) -> bytes:
    """Fraction of cells passing QC at each MAD threshold ``t``: generated cells vs data."""
    table = qc.sort_values("t")
    x = np.arange(len(table))

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        width = 0.38
        for offset, column, label, color in (
            (-width / 2, "pass_ratio_generated", "generated cells (model)", method_color("model")),
            (width / 2, "pass_ratio_data", "data cells", method_color("mean_baseline")),
        ):
            values = table[column].to_numpy()
            bars = ax.bar(x + offset, values, width, label=label, color=color)
            ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7.5, padding=2)
        ax.set_xticks(x, [f"t = {t:g}" for t in table["t"]])
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("fraction passing QC")
        ax.grid(axis="x", visible=False)
        ax.legend(loc="upper left", ncols=2)

    return render(draw, (5.2, 3.0))


def summary_stats_figure(points: pd.DataFrame, agreement: pd.DataFrame | None) -> bytes:
    """Predicted vs reported per-perturbation summary statistics, one panel per quantity."""
    quantities = list(dict.fromkeys(points["quantity"]))
    labels = {"knockdown": "knockdown", "n_degs": "number of DEGs"}
    rho = {} if agreement is None else dict(zip(agreement["quantity"], agreement["spearman"], strict=True))

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, len(quantities), squeeze=False)[0]
        for ax, quantity in zip(axes, quantities, strict=True):
            part = points[points["quantity"] == quantity]
            ax.scatter(
                part["reported"], part["predicted"], s=18, color=method_color("model"), alpha=0.7, lw=0
            )
            name = labels.get(quantity, quantity)
            ax.set_xlabel(f"reported {name}")
            ax.set_ylabel(f"predicted {name}")
            value = rho.get(quantity, float("nan"))
            suffix = f"\nSpearman ρ = {value:.3g}" if np.isfinite(value) else ""
            ax.set_title(f"{name}, {len(part)} perturbations{suffix}")
            if quantity == "n_degs" and (part[["reported", "predicted"]] > 0).all().all():
                ax.set_xscale("log")
                ax.set_yscale("log")

    return render(draw, (4.2 * len(quantities), 3.4))
