"""Stage 2, preprocessing: QC, filters, DE nodes, splits, OT pairing, ΔX, cfX → one artifact."""

import hashlib
import json
from pathlib import Path
from typing import Any

from redun import File, task

from tasks.acquire import DatasetSpec

redun_namespace = "gpo_vae"


def artifact_key(dataset: DatasetSpec, config: dict[str, Any]) -> str:
    """Content address of an artifact: the SHA-256 of the input files' contents and the config.

    Contents rather than redun's file hashes (path, size, modification time): a dataset folder
    re-written with the same bytes, e.g. after redun's database was lost, keeps its artifact.
    """
    from gpo_vae.io import sha256_of

    stats = dataset["summary_stats"]
    parts = {
        "counts": sha256_of(Path(dataset["counts"].path)),
        "summary_stats": sha256_of(Path(stats.path)) if stats else None,
        "summary_sheet": dataset["summary_sheet"],
        "layout": dataset["layout"],
        "config": config,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def screen_inputs(dataset: DatasetSpec, config: dict[str, Any]) -> tuple[Any, ...]:
    """(counts path, statistics path or None, sheet, validated preprocess config, layout, why the
    statistics are missing or None) of a dataset."""
    from gpo_vae.config import from_dict
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.preprocessing.config import PreprocessConfig

    stats = dataset["summary_stats"]
    return (
        dataset["counts"].path,
        stats.path if stats is not None else None,
        dataset["summary_sheet"],
        from_dict(PreprocessConfig, config, "preprocess"),
        ScreenLayout.from_dict(dataset["layout"]),
        dataset.get("summary_stats_problem"),
    )


@task(version="6", cache=True)
def preprocess_dataset(
    dataset: DatasetSpec,
    config: dict[str, Any],
    out_root: str,
    deg_picks: dict[str, str] | None = None,
    pairing: dict[str, Any] | None = None,
    doublets: list[str] | None = None,
) -> File:
    """Build (or reuse, when a complete copy exists) the preprocessed artifact of ``dataset``.

    ``deg_picks``: the DE test's picks, ``pairing``: the OT partners, ``doublets``: scrublet's
    calls, each computed in chunks beforehand (:func:`in_chunks`; the artifact is the same either way, so none is part of its content address)."""
    from gpo_vae.io import exclusive_lock
    from gpo_vae.preprocessing.artifact import ArtifactError, artifact_path
    from gpo_vae.preprocessing.from_file import build_artifact

    out_dir = Path(out_root) / artifact_key(dataset, config)
    with exclusive_lock(out_dir):  # a concurrent run of the same artifact waits, then reuses it
        try:
            # A complete artifact with the same content address needs no recomputation, even
            # when redun's database is gone.
            return File(str(artifact_path(out_dir)))
        except ArtifactError:
            pass
        counts, stats, sheet, preprocess_config, layout, missing = screen_inputs(dataset, config)
        built = build_artifact(
            counts,
            stats,
            sheet,
            preprocess_config,
            out_dir,
            layout,
            progress=False,
            missing_stats=missing,
            deg_picks=deg_picks,
            pairing=pairing,
            doublets=doublets,
        )
        return File(str(artifact_path(built, verify=False)))


@task(version="1", cache=True)
def plan_deg_chunks(
    dataset: DatasetSpec, config: dict[str, Any], out_root: str, perturbations_per_chunk: int
) -> list[list[str]]:
    """The DE test of ``dataset`` as chunks of perturbations: ``[fingerprint, spec path]`` each
    (:func:`gpo_vae.preprocessing.deg_chunks.plan_deg_of_file`); empty when preprocessing tests
    nothing itself (DE genes shipped with the file)."""
    from gpo_vae.preprocessing.deg_chunks import plan_deg_of_file

    counts, stats, sheet, preprocess_config, layout, missing = screen_inputs(dataset, config)
    chunks = plan_deg_of_file(
        counts,
        stats,
        sheet,
        preprocess_config,
        perturbations_per_chunk,
        Path(out_root) / "deg_chunks",
        layout,
        missing,
    )
    return [[chunk.fingerprint, str(chunk.spec)] for chunk in chunks]


# Cached on the chunk's fingerprint (the content of its cells, the controls and the settings);
# the spec's path is derived from it, so a screen changed elsewhere leaves this chunk cached.
@task(version="1", cache=True)
def deg_chunk(fingerprint: str, spec: str) -> dict[str, str]:
    """The FC3 picks of one chunk of perturbations (perturbation → gene)."""
    from gpo_vae.preprocessing.deg_chunks import deg_chunk_picks

    return deg_chunk_picks(spec)


@task()
def merge_deg_picks(parts: list[dict[str, str]]) -> dict[str, str]:
    """One perturbation → gene table from the chunks' picks."""
    return {group: gene for part in parts for group, gene in part.items()}


@task()
def run_deg_chunks(plan: list[list[str]], executor: str = "default") -> dict[str, str] | None:
    """Every chunk of ``plan`` as its own :func:`deg_chunk` job on ``executor``; None when the
    plan is empty (preprocessing then runs its own test)."""
    return merge_deg_picks(_jobs(deg_chunk, plan, executor)) if plan else None


@task(version="1", cache=True)
def plan_pair_chunks(
    dataset: DatasetSpec, config: dict[str, Any], out_root: str, perturbations_per_chunk: int
) -> dict[str, Any]:
    """The OT pairing of ``dataset`` as chunks of perturbations: ``chunks`` (``[fingerprint, spec
    path]`` each, :func:`gpo_vae.preprocessing.pair_chunks.plan_pairing_of_file`) and the
    features' ``record``; no chunks when the file ships its partners."""
    from gpo_vae.preprocessing.pair_chunks import plan_pairing_of_file

    counts, stats, sheet, preprocess_config, layout, missing = screen_inputs(dataset, config)
    plan = plan_pairing_of_file(
        counts,
        stats,
        sheet,
        preprocess_config,
        perturbations_per_chunk,
        Path(out_root) / "pair_chunks",
        layout,
        missing,
    )
    return {"chunks": [[chunk.fingerprint, str(chunk.spec)] for chunk in plan.chunks], "record": plan.record}


# Cached on the chunk's fingerprint (its cells' names, splits and features, the controls', the
# solver's settings), as deg_chunk is.
@task(version="1", cache=True)
def pair_chunk(fingerprint: str, spec: str) -> dict[str, str]:
    """The OT partner of every perturbed cell of one chunk (cell name → control name)."""
    from gpo_vae.preprocessing.pair_chunks import pair_chunk_partners

    return pair_chunk_partners(spec)


@task()
def merge_partners(parts: list[dict[str, str]], record: dict[str, Any]) -> dict[str, Any]:
    """The chunks' partners as one table, with the features' record."""
    return {"partners": {cell: partner for part in parts for cell, partner in part.items()}, "record": record}


@task()
def run_pair_chunks(plan: dict[str, Any], executor: str = "default") -> dict[str, Any] | None:
    """Every chunk of ``plan`` as its own :func:`pair_chunk` job on ``executor``; None when the
    plan has no chunks (preprocessing then takes the shipped partners)."""
    return (
        merge_partners(_jobs(pair_chunk, plan["chunks"], executor), plan["record"])
        if plan["chunks"]
        else None
    )


@task(version="1", cache=True)
def plan_doublet_chunks(dataset: DatasetSpec, config: dict[str, Any], out_root: str) -> list[list[str]]:
    """QC's scrublet chunks of ``dataset``: ``[fingerprint, spec path]`` each
    (:func:`gpo_vae.preprocessing.doublet_chunks.plan_doublets_of_file`); empty when QC calls no
    doublets or takes those a published file ships."""
    from gpo_vae.preprocessing.doublet_chunks import plan_doublets_of_file

    counts, stats, sheet, preprocess_config, layout, missing = screen_inputs(dataset, config)
    chunks = plan_doublets_of_file(
        counts, stats, sheet, preprocess_config, Path(out_root) / "doublet_chunks", layout, missing
    )
    return [[chunk.fingerprint, str(chunk.spec)] for chunk in chunks]


# Cached on the chunk's fingerprint (its cells' names and counts, the genes, its seed, the
# backend), as deg_chunk is.
@task(version="1", cache=True)
def doublet_chunk(fingerprint: str, spec: str) -> dict[str, Any]:
    """Scrublet on one chunk of cells: the cells it calls doublets (names)."""
    from gpo_vae.preprocessing.doublet_chunks import doublet_chunk_calls

    return doublet_chunk_calls(spec)


@task()
def merge_doublet_calls(parts: list[dict[str, Any]]) -> list[str]:
    """The cells every chunk called doublets, as one list."""
    skipped = [part for part in parts if part["skipped"]]
    if skipped:
        print(
            f"scrublet skipped {len(skipped)} of {len(parts)} chunks (their cells count as singlets)",
            flush=True,
        )
    return [name for part in parts for name in part["doublets"]]


@task()
def run_doublet_chunks(plan: list[list[str]], executor: str = "default") -> list[str] | None:
    """Every chunk of ``plan`` as its own :func:`doublet_chunk` job on ``executor``; None when
    the plan is empty (QC then calls or takes the doublets itself)."""
    return merge_doublet_calls(_jobs(doublet_chunk, plan, executor)) if plan else None


def _jobs(chunk_task: Any, chunks: list[list[str]], executor: str) -> list[Any]:
    """``chunk_task`` on every ``[fingerprint, spec]`` of ``chunks``, each a job on ``executor``."""
    return [chunk_task.options(executor=executor)(fingerprint, spec) for fingerprint, spec in chunks]


#: Each stage preprocessing can spread over jobs: its plan task and the task running the plan.
CHUNKED_STAGES = {
    "deg": (plan_deg_chunks, run_deg_chunks),
    "pairing": (plan_pair_chunks, run_pair_chunks),
    "doublets": (plan_doublet_chunks, run_doublet_chunks),
}


def in_chunks(
    stage: str,
    dataset: DatasetSpec,
    config: dict[str, Any],
    out_root: str,
    executor: str = "default",
    perturbations_per_chunk: int | None = None,
) -> Any:
    """A lazy value for :func:`preprocess_dataset`: the ``stage``'s results (``deg``: the DE
    picks; ``pairing``: the OT partners; ``doublets``: scrublet's calls) computed as redun jobs on
    ``executor``, one per chunk of ``perturbations_per_chunk`` perturbations (``deg``,
    ``pairing``) or per chunk of cells QC deals (``doublets``)."""
    plan_task, run_task = CHUNKED_STAGES[stage]
    per_chunk = () if perturbations_per_chunk is None else (perturbations_per_chunk,)
    plan = plan_task.options(executor=executor)(dataset, config, out_root, *per_chunk)
    return run_task(plan, executor)


def preprocessed(
    dataset: DatasetSpec,
    config: dict[str, Any],
    out_root: str,
    deg_chunk_size: int = 0,
    executor: str = "default",
    pairing_chunk_size: int = 0,
    doublet_chunks: bool = False,
) -> Any:
    """The artifact of ``dataset`` (a lazy value): :func:`preprocess_dataset` on ``executor``,
    its DE test and its OT pairing first spread as jobs of ``deg_chunk_size`` and
    ``pairing_chunk_size`` perturbations when those are > 0, and scrublet's chunks as jobs when
    ``doublet_chunks``."""
    picks = in_chunks("deg", dataset, config, out_root, executor, deg_chunk_size) if deg_chunk_size else None
    pairs = (
        in_chunks("pairing", dataset, config, out_root, executor, pairing_chunk_size)
        if pairing_chunk_size
        else None
    )
    doublets = in_chunks("doublets", dataset, config, out_root, executor) if doublet_chunks else None
    return preprocess_dataset.options(executor=executor)(dataset, config, out_root, picks, pairs, doublets)


@task(version="2", cache=False)
def inspect_dataset(dataset: DatasetSpec, config: dict[str, Any]) -> str:
    """Print what preprocessing would do with ``dataset`` (never cached: it prints); return its
    last line (what ``main`` would train on), so redun's printed result does not repeat it all."""
    from gpo_vae.preprocessing.inspect import inspect_screen

    lines = inspect_screen(*screen_inputs(dataset, config))
    print("\n".join(lines), flush=True)
    return lines[-1]
