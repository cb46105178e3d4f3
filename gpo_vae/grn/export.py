"""The learned graph in the formats other tools read.

- ``grn_network.tsv``: ``source``, ``target``, ``weight`` (the mask probability) and ``method``
  (which method made the graph: the trained mask, its threshold and GRN settings), one row per
  edge above the threshold, no self-loops: the network layout of decoupler
  (``decoupler.mt.ulm(adata, net)``, which ignores extra columns) and pertpy, read with
  ``pandas.read_csv(path, sep="\\t")``.
- ``grn.graphml``: the same edges (attributes ``weight``) and every node (attribute ``kind``:
  ``perturbed`` or ``downstream``), for Cytoscape (File → Import → Network from File) or
  ``networkx.read_graphml``; the graph's ``method`` attribute says what made it.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from gpo_vae.io import temp_sibling

NETWORK_FILE = "grn_network.tsv"
GRAPHML_FILE = "grn.graphml"
_GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
#: grn_nodes.csv kind → the GraphML node attribute.
NODE_KINDS = {"P": "perturbed", "A": "downstream"}


def network_table(edges: pd.DataFrame, method: str | None = None) -> pd.DataFrame:
    """``source``, ``target``, ``weight`` from an edge table with ``p`` (or ``probability``), and
    ``method`` when given."""
    weight = "p" if "p" in edges.columns else "probability"
    table = edges[["source", "target", weight]].rename(columns={weight: "weight"})
    if method is not None:
        table = table.assign(method=method)
    return table[table["source"] != table["target"]].reset_index(drop=True)


def graphml_text(edges: pd.DataFrame, nodes: pd.DataFrame, method: str | None = None) -> str:
    """A directed GraphML document: ``nodes`` (``node``, ``kind`` P/A), weighted ``edges`` and,
    when given, the graph's ``method``."""
    ET.register_namespace("", _GRAPHML_NS)
    root = ET.Element(f"{{{_GRAPHML_NS}}}graphml")
    for key, domain, name, kind in (
        ("method", "graph", "method", "string"),
        ("kind", "node", "kind", "string"),
        ("weight", "edge", "weight", "double"),
    ):
        ET.SubElement(
            root,
            f"{{{_GRAPHML_NS}}}key",
            {"id": key, "for": domain, "attr.name": name, "attr.type": kind},
        )
    graph = ET.SubElement(root, f"{{{_GRAPHML_NS}}}graph", {"id": "gpo_vae_grn", "edgedefault": "directed"})
    if method is not None:
        ET.SubElement(graph, f"{{{_GRAPHML_NS}}}data", {"key": "method"}).text = method
    for name, kind in zip(nodes["node"].astype(str), nodes["kind"].astype(str), strict=True):
        element = ET.SubElement(graph, f"{{{_GRAPHML_NS}}}node", {"id": name})
        ET.SubElement(element, f"{{{_GRAPHML_NS}}}data", {"key": "kind"}).text = NODE_KINDS.get(kind, kind)
    table = network_table(edges)
    for i, (source, target, weight) in enumerate(table.itertuples(index=False)):
        element = ET.SubElement(
            graph, f"{{{_GRAPHML_NS}}}edge", {"id": f"e{i}", "source": str(source), "target": str(target)}
        )
        ET.SubElement(element, f"{{{_GRAPHML_NS}}}data", {"key": "weight"}).text = repr(float(weight))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_network_files(
    edges: pd.DataFrame, nodes: pd.DataFrame, directory: str | Path, method: str | None = None
) -> list[Path]:
    """Write :data:`NETWORK_FILE` and :data:`GRAPHML_FILE` into ``directory`` (each atomically);
    ``method`` says what made the graph."""
    directory = Path(directory)
    written = []
    for name, text in (
        (NETWORK_FILE, network_table(edges, method).to_csv(sep="\t", index=False)),
        (GRAPHML_FILE, graphml_text(edges, nodes, method)),
    ):
        path = directory / name
        tmp = temp_sibling(path, is_dir=False, suffix=".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written


__all__ = ["GRAPHML_FILE", "NETWORK_FILE", "graphml_text", "network_table", "write_network_files"]
