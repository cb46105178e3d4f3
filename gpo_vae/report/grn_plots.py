"""Figures of the GRN sections (heatmap, drawn network, precision-recall, CausalBench vs K).

All return PNG bytes through :func:`gpo_vae.report.plots.render`. The network layout is a
seeded Fruchterman-Reingold spring layout in numpy (a few dozen nodes: no graph library needed).
"""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from gpo_vae.report.plots import DPI, grid_shape, method_color, method_label, ordered_methods, render

HEATMAP_CMAP = "magma_r"
NODE_COLORS = {"P": "#1f5f99", "A": "#d9822b", "": "#7b8794"}
MAX_TICK_LABELS = 40
MAX_CURVE_POINTS = 2000
# Spring layout: edges rest at EDGE_STRETCH × the node spacing, so arrows stay longer than labels;
# gravity packs disconnected components instead of pushing them to the corners.
EDGE_STRETCH = 3.0
GRAVITY = 0.3


def order_nodes(mask: pd.DataFrame, nodes: pd.DataFrame | None) -> tuple[pd.DataFrame, int | None]:
    """The mask with nodes ordered P then A (order within each kind kept) and the number of P.

    Without a node table the mask keeps its order and the P/A boundary is unknown (``None``).
    Nodes of the table missing from the mask (or the reverse) are an error.
    """
    if nodes is None:
        return mask, None
    kinds = dict(zip(nodes["node"], nodes["kind"], strict=True))
    unknown = [n for n in mask.index if n not in kinds]
    if unknown or len(kinds) != len(mask):
        raise ValueError(
            f"grn_nodes.csv and grn_mask.csv disagree on the nodes ({len(kinds)} vs {len(mask)}; "
            f"not in grn_nodes.csv: {unknown[:5]})"
        )
    order = [n for n in mask.index if kinds[n] == "P"] + [n for n in mask.index if kinds[n] == "A"]
    return mask.loc[order, order], sum(kinds[n] == "P" for n in order)


def _tick_positions(n: int) -> np.ndarray:
    return np.arange(0, n, max(1, math.ceil(n / MAX_TICK_LABELS)))


def heatmap_figure(mask: pd.DataFrame, n_perturbed: int | None = None) -> bytes:
    """The mask probabilities as a T × T image (rows = source, columns = target).

    The figure is sized so the image has at least one pixel per node (up to T ≈ 850), so a
    single strong edge is never averaged away; the diagonal (never an edge) is grey. At most
    :data:`MAX_TICK_LABELS` node names are labelled per axis.
    """
    values = mask.to_numpy(dtype=np.float64, copy=True)
    n = values.shape[0]
    np.fill_diagonal(values, np.nan)
    side = float(np.clip(n / DPI + 1.9, 5.5, 9.5))
    ticks = _tick_positions(n)
    names = mask.index.to_numpy()
    fontsize = 7.5 if len(ticks) <= 20 else 6

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        cmap = mpl.colormaps[HEATMAP_CMAP].with_extremes(bad="#d9e2ec")
        image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        ax.grid(False)
        ax.set_xticks(ticks, names[ticks], rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, names[ticks], fontsize=fontsize)
        ax.set_xlabel("target node")
        ax.set_ylabel("source node")
        if n_perturbed is not None and 0 < n_perturbed < n:
            for line in (ax.axhline, ax.axvline):
                line(n_perturbed - 0.5, color="#1f2933", lw=0.8)
            top = blended_transform_factory(ax.transData, ax.transAxes)
            for centre, label in (
                ((n_perturbed - 1) / 2, f"P: perturbed genes ({n_perturbed})"),
                ((n_perturbed + n - 1) / 2, f"A: downstream genes ({n - n_perturbed})"),
            ):
                ax.text(centre, 1.01, label, transform=top, ha="center", va="bottom", fontsize=8)
        figure.colorbar(image, ax=ax, shrink=0.6, label="mask probability p(source → target)")

    return render(draw, (side + 1.3, side))


def spring_layout(
    n_nodes: int, sources: np.ndarray, targets: np.ndarray, iterations: int = 300, seed: int = 0
) -> np.ndarray:
    """Fruchterman-Reingold positions (n × 2, within [-1, 1]) of an undirected view of the edges.

    Starts from a circle (slightly jittered by ``seed``), so the layout is deterministic. A weak
    pull to the centre keeps disconnected components on the canvas.
    """
    if n_nodes == 0:
        return np.zeros((0, 2))
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * np.arange(n_nodes) / n_nodes
    pos = np.column_stack([np.cos(angle), np.sin(angle)]) + rng.normal(0, 0.01, (n_nodes, 2))
    k = 1.0 / math.sqrt(n_nodes)
    temperature = 0.2
    for step in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        distance = np.maximum(np.linalg.norm(delta, axis=2), 1e-3)
        displacement = (delta * (k * k / distance**2)[:, :, None]).sum(axis=1)
        edge = pos[sources] - pos[targets]
        length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-3)
        pull = edge * length / (EDGE_STRETCH * k)
        np.add.at(displacement, sources, -pull)
        np.add.at(displacement, targets, pull)
        displacement -= GRAVITY * pos * np.linalg.norm(pos, axis=1, keepdims=True) / k
        size = np.maximum(np.linalg.norm(displacement, axis=1, keepdims=True), 1e-9)
        pos += displacement / size * np.minimum(size, temperature * (1 - step / iterations) + 1e-3)
    pos -= pos.mean(axis=0)
    return pos / max(float(np.abs(pos).max()), 1e-9)


def label_directions(pos: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Unit vectors pointing from each node away from the mean direction of its edges.

    Labels placed that way rarely cover the node's own arrowheads; a node whose edges cancel
    out gets its label above.
    """
    pull = np.zeros_like(pos)
    for a, b in ((sources, targets), (targets, sources)):
        towards = pos[b] - pos[a]
        towards /= np.maximum(np.linalg.norm(towards, axis=1, keepdims=True), 1e-9)
        np.add.at(pull, a, towards)
    away = -pull
    size = np.linalg.norm(away, axis=1, keepdims=True)
    return np.where(size > 1e-6, away / np.maximum(size, 1e-9), np.array([0.0, 1.0]))


def network_figure(edges: pd.DataFrame, nodes: pd.DataFrame | None = None, top: int = 40) -> bytes:
    """The ``top`` most probable edges drawn as a directed network (arrow width and colour ∝ p).

    Nodes are coloured by kind (P perturbed, A downstream) when a node table is given;
    reciprocal pairs curve apart so both arrows show.
    """
    chosen = edges[edges["source"] != edges["target"]].sort_values("p", ascending=False, kind="stable")
    chosen = chosen.head(top)
    names = list(dict.fromkeys([*chosen["source"], *chosen["target"]]))
    index = {name: i for i, name in enumerate(names)}
    src = chosen["source"].map(index).to_numpy(dtype=np.int64)
    dst = chosen["target"].map(index).to_numpy(dtype=np.int64)
    pos = spring_layout(len(names), src, dst)
    kinds = {} if nodes is None else dict(zip(nodes["node"], nodes["kind"], strict=True))
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    p = chosen["p"].to_numpy(dtype=np.float64)
    lo, hi = (float(p.min()), float(p.max())) if p.size else (0.0, 1.0)
    norm = mpl.colors.Normalize(vmin=min(lo, hi - 1e-6), vmax=hi)
    cmap = mpl.colormaps["Blues"]

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        ax.set_axis_off()
        if not names:
            ax.text(0.5, 0.5, "no edges", ha="center", va="center", transform=ax.transAxes)
            return
        for i, j, weight in zip(src, dst, p, strict=True):
            level = norm(weight)
            ax.annotate(
                "",
                xy=pos[j],
                xytext=pos[i],
                arrowprops={
                    "arrowstyle": "-|>,head_length=0.5,head_width=0.25",
                    "color": cmap(0.35 + 0.65 * level),
                    "lw": 0.7 + 1.8 * level,
                    "shrinkA": 7,
                    "shrinkB": 7,
                    "connectionstyle": f"arc3,rad={0.2 if (j, i) in pairs else 0.06}",
                },
                zorder=1,
            )
        colors = [NODE_COLORS[kinds.get(name, "")] for name in names]
        ax.scatter(pos[:, 0], pos[:, 1], s=90, c=colors, edgecolors="white", linewidths=1.0, zorder=2)
        for name, point, away in zip(names, pos, label_directions(pos, src, dst), strict=True):
            ax.annotate(
                name,
                point,
                xytext=tuple(8 * away),
                textcoords="offset points",
                ha="center" if abs(away[0]) < 0.4 else ("left" if away[0] > 0 else "right"),
                va="center" if abs(away[1]) < 0.4 else ("bottom" if away[1] > 0 else "top"),
                fontsize=7.5,
                zorder=3,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
            )
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.12, 1.2)
        if kinds:
            handles = [
                mpl.lines.Line2D([], [], ls="", marker="o", color=NODE_COLORS[k], label=label)
                for k, label in (("P", "perturbed gene (P)"), ("A", "downstream gene (A)"))
            ]
            figure.legend(handles=handles, loc="outside upper center", ncols=2)
        mappable = mpl.cm.ScalarMappable(
            norm=norm, cmap=mpl.colors.ListedColormap(cmap(np.linspace(0.35, 1, 64)))
        )
        figure.colorbar(mappable, ax=ax, shrink=0.5, label="edge probability p")

    return render(draw, (8.5, 7.2))


def _thin(curve: pd.DataFrame) -> pd.DataFrame:
    if len(curve) <= MAX_CURVE_POINTS:
        return curve
    keep = np.unique(np.linspace(0, len(curve) - 1, MAX_CURVE_POINTS).round().astype(np.int64))
    return curve.iloc[keep]


def pr_curves_figure(curves: pd.DataFrame, reference: pd.DataFrame | None = None) -> bytes:
    """Precision-recall curves per reference network (panels) and method (lines).

    With ``reference`` (``grn_reference.csv``) the legend gives each AUPRC and a dashed line
    marks the chance level (the positive rate of the pairs considered).
    """
    networks = list(dict.fromkeys(curves["network"]))
    rows, columns = grid_shape(len(networks), 3)
    indexed = None if reference is None else reference.set_index(["method", "network"])

    def draw(figure: Figure) -> None:
        axes = figure.subplots(rows, columns, squeeze=False)
        for ax in axes.ravel()[len(networks) :]:
            ax.set_visible(False)
        for ax, network in zip(axes.ravel(), networks, strict=False):
            part = curves[curves["network"] == network]
            for method in ordered_methods(part["method"].tolist()):
                # sklearn's order (recall falling) drawn as steps, as PrecisionRecallDisplay does
                curve = part[part["method"] == method]
                curve = _thin(curve.sort_values("recall", ascending=False, kind="stable"))
                label = method_label(method)
                if indexed is not None and (method, network) in indexed.index:
                    auprc = indexed.loc[(method, network), "auprc"]
                    auprc = float(np.asarray(auprc).ravel()[0])
                    label += f" (AUPRC {auprc:.3g})" if np.isfinite(auprc) else ""
                ax.plot(
                    curve["recall"],
                    curve["precision"],
                    color=method_color(method),
                    lw=1.4,
                    drawstyle="steps-post",
                    label=label,
                )
            if reference is not None:
                rate = reference.loc[reference["network"] == network, "positive_rate"].dropna()
                if len(rate):
                    ax.axhline(float(rate.iloc[0]), color="#9aa5b1", ls="--", lw=0.9, label="chance")
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_title(network)
            # below the panel: inside, the legend covered the curves' high-precision start
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, fontsize=7.5)

    entries = curves.groupby("network")["method"].nunique().max() + 1
    return render(draw, (4.0 * columns, (3.4 + 0.17 * entries) * rows))


def statistics_by_k_figure(stats: pd.DataFrame) -> bytes:
    """CausalBench precision and mean Wasserstein against the number of edges, per method.

    Top-K rows are lines over K; each method's own thresholded graph is a star at its edge count.
    """
    panels = (
        ("precision", "precision (significant / tested edges)"),
        ("mean_wasserstein", "mean Wasserstein"),
    )
    is_k = pd.to_numeric(stats["k"], errors="coerce").notna()
    edges = stats["n_edges"].to_numpy(dtype=float)
    edges = edges[np.isfinite(edges) & (edges > 0)]
    log_x = bool(edges.size and edges.max() / edges.min() > 20)

    def draw(figure: Figure) -> None:
        axes = figure.subplots(1, 2, squeeze=False)[0]
        for ax, (column, title) in zip(axes, panels, strict=True):
            for method in ordered_methods(stats["method"].tolist()):
                rows = stats["method"] == method
                curve = (
                    stats[rows & is_k].assign(k_value=lambda f: pd.to_numeric(f["k"])).sort_values("k_value")
                )
                color = method_color(method)
                if len(curve):
                    ax.plot(
                        curve["k_value"],
                        curve[column],
                        marker="o",
                        ms=3,
                        color=color,
                        label=method_label(method),
                    )
                own = stats[rows & ~is_k]
                if len(own):
                    label = None if len(curve) else method_label(method)
                    ax.scatter(
                        own["n_edges"], own[column], marker="*", s=110, color=color, zorder=3, label=label
                    )
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
                ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
            ax.set_xlabel("number of edges (K, or the model's own graph ★)")
            ax.set_title(title)
        axes[0].legend(loc="best")

    return render(draw, (9.0, 3.4))
