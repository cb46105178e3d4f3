"""Readers of reference networks: every real network file (skipped when ``../shared/data`` is
absent) and small files built in ``tmp_path``.
"""

from __future__ import annotations

import functools
import gzip
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpo_vae.data.networks import (
    NETWORK_FORMATS,
    detect_network_format,
    network_adjacency,
    network_edge_set,
    read_network,
    union_networks,
)
from gpo_vae.data.reference import ReferenceFormatError
from tests.shared_data import shared_file

# ---------------------------------------------------------------- real networks

WEIGHT = "weight"
# file → (format, directed, edges verified in the raw file with zcat | grep, one weight or None)
NETWORK_FILES = {
    "chipseq_hepg2.csv.gz": (
        "chipseq",
        True,
        [("KAT7", "MAMDC2"), ("ARID1B", "TENT4A")],
        ("ARID1B", "TENT4A", 92),
    ),
    "chipseq_k562.csv.gz": (
        "chipseq",
        True,
        [("GATA1", "NFE2"), ("KDM5B", "CYP2W1")],
        ("GATA1", "NFE2", 2709),
    ),
    "corum_complexes.csv.gz": (
        "corum",
        False,
        [("BCL6", "HDAC4"), ("CCNA2", "CDK2"), ("MAP2K3", "PKN1")],
        None,
    ),
    "dorothea_human_ABCDE.csv.gz": (
        "dorothea",
        True,
        [("ADNP", "ATF7IP"), ("TP53", "MDM2"), ("ZZZ3", "ZP3")],
        None,
    ),
    "regnetwork_human.tsv.gz": (
        "regnetwork",
        True,
        [("USF1", "S100A6"), ("TP53", "MDM2"), ("hsa-mir-328", "CD44")],
        None,
    ),
    "remap_chipseq.csv.gz": ("remap", True, [("ADNP", "ABCC1"), ("GATA1", "AAK1"), ("ZZZ3", "ZP3")], None),
    "string_score_ge0.9.csv.gz": (
        "string",
        False,
        [("MDM2", "TP53"), ("ARF5", "RAB11FIP3")],
        ("MDM2", "TP53", 0.999),
    ),
    "trrust_human.csv.gz": (
        "trrust",
        True,
        [("TP53", "CDKN1A"), ("AHR", "ABCG2"), ("ZNF76", "TALDO1")],
        None,
    ),
}


@functools.cache
def real_network(name: str) -> pd.DataFrame:
    return read_network(shared_file(f"networks/{name}"))


@functools.cache
def direct_pairs(name: str) -> set[tuple[str, str]]:
    """Non-self edges of a file read with plain pandas, undirected ones as sorted pairs."""
    path = shared_file(f"networks/{name}")
    if name.startswith("corum"):
        pairs = set()
        for genes in pd.read_csv(path)["Genes"]:
            members = {g.strip() for g in genes.split(";")} - {"", "N/A"}
            pairs |= set(itertools.combinations(sorted(members), 2))
        return pairs
    if name.startswith("regnetwork"):
        raw = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
        pairs = zip(raw[0], raw[2], strict=True)
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        columns = {"chipseq": ("source", "target"), "string": ("protein1", "protein2")}
        source, target = columns.get(NETWORK_FILES[name][0], ("tf", "target"))
        pairs = zip(raw[source], raw[target], strict=True)
    directed = NETWORK_FILES[name][1]
    return {(a, b) if directed or a < b else (b, a) for a, b in pairs if a != b}


def test_every_shared_network_file_is_covered() -> None:
    folder = shared_file("networks")
    assert sorted(p.name for p in folder.iterdir()) == sorted(NETWORK_FILES)


@pytest.mark.parametrize("name", list(NETWORK_FILES))
def test_read_network_real(name: str) -> None:
    fmt, directed, known, weighted = NETWORK_FILES[name]
    assert detect_network_format(name) == fmt
    df = real_network(name)
    assert len(df) > 0
    assert list(df.columns[:3]) == ["source", "target", "directed"]
    assert (WEIGHT in df.columns) == (weighted is not None)
    assert (df["directed"] == directed).all()
    assert not (df["source"] == df["target"]).any()
    assert not df.duplicated(["source", "target", "directed"]).any()
    assert not (df["source"].str.strip() != df["source"]).any()
    if not directed:
        assert (df["source"] < df["target"]).all()
    assert set(zip(df["source"], df["target"], strict=True)) == direct_pairs(name)
    edges = network_edge_set(df)
    for source, target in known:
        assert (source, target) in edges
        assert ((target, source) in edges) == (not directed or (target, source) in direct_pairs(name))
    if weighted is not None:
        source, target, weight = weighted
        row = df[(df["source"] == source) & (df["target"] == target)]
        assert row[WEIGHT].tolist() == [pytest.approx(weight)]


def test_dorothea_confidence_filter_real() -> None:
    path = shared_file("networks/dorothea_human_ABCDE.csv.gz")
    raw = pd.read_csv(path)
    df = read_network(path, confidence="AB")
    assert len(df) == int(raw["confidence"].isin(["A", "B"]).sum())
    assert ("TP53", "MDM2") in network_edge_set(df)  # confidence A


def test_network_adjacency_real_trrust_and_string() -> None:
    # TRRUST lines among these genes (zcat | grep): TP53→{CDKN1A,E2F1,MDM2,MYC,TP53},
    # E2F1→{CDKN1A,E2F1,MDM2,MYC,TP53}, MYC→{CDKN1A,TP53}; self-loops dropped.
    nodes = ["TP53", "MDM2", "CDKN1A", "E2F1", "MYC"]
    expected = np.zeros((5, 5), dtype=bool)
    for source, targets in {
        "TP53": "CDKN1A E2F1 MDM2 MYC",
        "E2F1": "CDKN1A MDM2 MYC TP53",
        "MYC": "CDKN1A TP53",
    }.items():
        for target in targets.split():
            expected[nodes.index(source), nodes.index(target)] = True
    np.testing.assert_array_equal(network_adjacency(real_network("trrust_human.csv.gz"), nodes), expected)
    # STRING ≥ 0.9 links all six pairs of these four genes, each stored once in the file.
    nodes = ["TP53", "MDM2", "CDKN1A", "EP300", "NOT_A_GENE"]
    adjacency = network_adjacency(real_network("string_score_ge0.9.csv.gz"), nodes)
    expected = np.zeros((5, 5), dtype=bool)
    expected[:4, :4] = ~np.eye(4, dtype=bool)
    np.testing.assert_array_equal(adjacency, expected)
    assert (adjacency == adjacency.T).all()


# ---------------------------------------------------------------- synthetic networks


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


# format → (file name, content, expected (source, target) rows in order, directed)
SMALL_NETWORKS = {
    "chipseq": (
        "chipseq_test.csv.gz",
        ",target,weight,source\n0,B,10,A\n1, C ,5,A\n2,A,3,A\n3,B,20,A\n",
        [("A", "B"), ("A", "C")],
        True,
    ),
    "corum": (
        "corum_test.csv.gz",
        '"","ID","Name","Genes","Length"\n"1",1,"x","C;A;B",3\n"2",2,"y","B; A;;N/A",2\n"3",3,"z","D",1\n',
        [("A", "C"), ("B", "C"), ("A", "B")],
        False,
    ),
    "dorothea": (
        "dorothea_test.csv",
        "tf,confidence,target,mor\nA,A,B,1.0\nA,E,C,-1.0\nNA,B,A,1.0\n",
        [("A", "B"), ("A", "C"), ("NA", "A")],
        True,
    ),
    "regnetwork": (
        "regnetwork_test.tsv",
        "A\t1\tB\t2\nA\t1\tB\t2\nB\t2\tB\t2\nmiR-1\tMI1\tA\t1\n",
        [("A", "B"), ("miR-1", "A")],
        True,
    ),
    "remap": ("remap_chipseq_test.csv", "tf,target\nA,B\nA,B\nB,A\n", [("A", "B"), ("B", "A")], True),
    "string": (
        "string_test.csv.gz",
        '"","score","protein1","protein2"\n"1",0.95,"B","A"\n"2",0.99,"A","B"\n"3",0.91,"C","A"\n',
        [("A", "B"), ("A", "C")],
        False,
    ),
    "trrust": ("trrust_test.csv", 'tf,target,mor,pubmed_id\nA,B,1.0,"1,2"\nA,A,0.0,3\n', [("A", "B")], True),
    "edgelist": (
        "true_network.csv",
        "source,target,weight\nA,B,-0.5\nB,C,0.2\nA,B,0.1\n",
        [("A", "B"), ("B", "C")],
        True,
    ),
}


@pytest.mark.parametrize("fmt", list(SMALL_NETWORKS))
def test_small_network_every_format(fmt: str, tmp_path: Path) -> None:
    name, text, expected, directed = SMALL_NETWORKS[fmt]
    path = write(tmp_path / name, text)
    assert detect_network_format(path) == fmt
    df = read_network(path)
    # Order is the file order of each kept edge; compare as sorted lists so duplicates show.
    assert sorted(zip(df["source"], df["target"], strict=True)) == sorted(expected)
    assert df["directed"].dtype == bool and (df["directed"] == directed).all()


def test_duplicate_edges_keep_strongest_weight(tmp_path: Path) -> None:
    def weights(name: str, fmt: str) -> dict[tuple[str, str], float]:
        df = read_network(write(tmp_path / name, SMALL_NETWORKS[fmt][1]))
        return dict(zip(zip(df["source"], df["target"], strict=True), df["weight"], strict=True))

    assert weights("chipseq_w.csv", "chipseq") == {("A", "B"): 20.0, ("A", "C"): 5.0}
    assert weights("string_w.csv", "string") == {("A", "B"): 0.99, ("A", "C"): 0.91}
    assert weights("edges.csv", "edgelist") == {("A", "B"): -0.5, ("B", "C"): 0.2}
    # A duplicate without a weight loses to one with a weight, whichever comes first.
    gaps = read_network(write(tmp_path / "gaps.csv", "source,target,weight\nA,B,\nA,B,0.3\nC,D,0.1\nC,D,\n"))
    assert gaps["weight"].tolist() == [0.3, 0.1]


def test_detect_network_format_from_names() -> None:
    assert detect_network_format("remap_chipseq.csv.gz") == "remap"
    assert detect_network_format("k562_chipseq.csv") == "chipseq"
    assert detect_network_format("data/my_TRRUST_v2.tsv.gz") == "trrust"
    assert detect_network_format("true_network.csv") == "edgelist"
    assert detect_network_format("string_vs_corum.csv") == "string"
    assert set(NETWORK_FORMATS) >= {
        "chipseq",
        "corum",
        "dorothea",
        "regnetwork",
        "remap",
        "string",
        "trrust",
        "edgelist",
    }
    assert all(fmt.description for fmt in NETWORK_FORMATS.values())


def test_network_errors(tmp_path: Path) -> None:
    with pytest.raises(ReferenceFormatError, match="no such file"):
        read_network(tmp_path / "trrust.csv")
    path = write(tmp_path / "trrust_bad.csv", "regulator,target\nA,B\n")
    with pytest.raises(ReferenceFormatError, match=r"trrust_bad\.csv.*lacks column\(s\) \['tf'\].*regulator"):
        read_network(path)
    generic = write(tmp_path / "edges.csv", "from,to\nA,B\n")
    with pytest.raises(ReferenceFormatError, match=r"edgelist.*\['source', 'target'\]"):
        read_network(generic)
    with pytest.raises(ValueError, match="unknown network format 'biogrid'"):
        read_network(generic, format="biogrid")
    with pytest.raises(ValueError, match="do not apply to the edgelist format"):
        read_network(write(tmp_path / "ok.csv", "source,target\nA,B\n"), confidence="A")
    dorothea = write(tmp_path / "dorothea.csv", SMALL_NETWORKS["dorothea"][1])
    with pytest.raises(ValueError, match="confidence levels"):
        read_network(dorothea, confidence="AZ")
    flags = write(tmp_path / "flags.csv", "source,target,directed\nA,B,maybe\n")
    with pytest.raises(ReferenceFormatError, match="true/false"):
        read_network(flags)


def test_dorothea_confidence_filter(tmp_path: Path) -> None:
    path = write(tmp_path / "dorothea.csv", SMALL_NETWORKS["dorothea"][1])
    df = read_network(path, confidence="ab")
    assert list(zip(df["source"], df["target"], strict=True)) == [("A", "B"), ("NA", "A")]


def test_format_override_and_directed_column(tmp_path: Path) -> None:
    path = write(tmp_path / "links.tsv", "score\tprotein1\tprotein2\n0.9\tB\tA\n")
    df = read_network(path, format="string")
    assert (df["source"].tolist(), df["target"].tolist(), df["directed"].tolist()) == (["A"], ["B"], [False])
    mixed = read_network(
        write(tmp_path / "mixed.csv", "source,target,directed\nB,A,false\nB,A,true\nA,B,False\n")
    )
    assert list(mixed.itertuples(index=False, name=None)) == [("A", "B", False), ("B", "A", True)]


EDGES = pd.DataFrame(
    {
        "source": ["A", "A", "C", "B", "X"],
        "target": ["B", "C", "D", "D", "A"],
        "directed": [True, False, True, False, True],
    }
)


def test_network_adjacency_hand_built() -> None:
    nodes = ["D", "C", "B", "A"]
    expected = np.array(
        [
            # D      C      B      A      (targets)
            [False, False, True, False],  # D: B–D undirected
            [True, False, False, True],  # C: C→D, A–C undirected
            [True, False, False, False],  # B: B–D undirected
            [False, True, True, False],  # A: A→B, A–C
        ]
    )
    adjacency = network_adjacency(EDGES, nodes)
    np.testing.assert_array_equal(adjacency, expected)
    assert adjacency.dtype == bool
    with pytest.raises(ValueError, match="nodes must be unique"):
        network_adjacency(EDGES, ["A", "A"])


def test_network_edge_set_both_orientations_for_undirected() -> None:
    assert network_edge_set(EDGES, nodes=["A", "B", "C"]) == {("A", "B"), ("A", "C"), ("C", "A")}
    assert ("D", "B") in network_edge_set(EDGES) and ("D", "C") not in network_edge_set(EDGES)


def test_union_networks() -> None:
    other = pd.DataFrame(
        {
            "source": ["A", "D", "B"],
            "target": ["B", "B", "A"],
            "directed": [True, False, False],
            "weight": [1.0, 2.0, 3.0],
        }
    )
    union = union_networks([EDGES, other])
    assert list(union.columns) == ["source", "target", "directed"]
    assert list(union.itertuples(index=False, name=None)) == [
        ("A", "B", True),
        ("A", "C", False),
        ("C", "D", True),
        ("B", "D", False),
        ("X", "A", True),
        ("A", "B", False),
    ]
    nodes = ["A", "B", "C", "D", "X"]
    np.testing.assert_array_equal(
        network_adjacency(union, nodes), network_adjacency(EDGES, nodes) | network_adjacency(other, nodes)
    )
    assert union_networks([]).empty
