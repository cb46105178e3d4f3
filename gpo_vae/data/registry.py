"""One record per named dataset: where it comes from and which files and sheets apply."""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpo_vae.data.contract import CONTROL_LABEL, PERTURBATION_KEY
from gpo_vae.data.download import GDRIVE_URL
from gpo_vae.errors import UserError


@dataclass(frozen=True)
class Archive:
    """A published archive: file name, Google Drive id, and SHA-256 when known."""

    filename: str
    gdrive_id: str
    sha256: str | None = None

    def url(self, mirror: str | None = None) -> str:
        """Download address: ``mirror/filename`` when a mirror is set, else Google Drive."""
        mirror = mirror if mirror is not None else os.environ.get("GPO_VAE_MIRROR")
        if mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return GDRIVE_URL.format(id=self.gdrive_id)


# The GPO-VAE authors' published archives. Their SHA-256 is not published, so integrity is
# checked by a complete tar extraction and the presence of the expected members.
DATASETS_ARCHIVE = Archive("datasets.tar.gz", "1gpnjtKYLAsyGrPqGT8NbTcvx2tiLowXN")
SUMMARY_STATS_ARCHIVE = Archive("summary_stats.tar.gz", "1C7vGxYqT-UvN1o_aYpVOcJXTDuJmH-lg")


@dataclass(frozen=True)
class DatasetRecord:
    """How to obtain one dataset.

    ``counts_file`` and ``stats_file`` are file names searched for (recursively) in a
    user's ``--data-dir`` and in the extracted archives; ``stats_sheet`` picks the sheet of
    a workbook. ``simulated`` datasets are generated, not downloaded.
    """

    name: str
    description: str
    counts_file: str | None = None
    counts_archive: Archive | None = None
    stats_file: str | None = None
    stats_archive: Archive | None = None
    stats_sheet: str | None = None
    perturbation_key: str = PERTURBATION_KEY
    control_label: str = CONTROL_LABEL
    simulated: bool = False


DATASETS: dict[str, DatasetRecord] = {
    "synthetic": DatasetRecord(
        name="synthetic",
        description="Simulated Perturb-seq screen with a known GRN (ships with the code; offline).",
        simulated=True,
        stats_file="summary_stats.xlsx",
        stats_sheet="TabS_synthetic_summary_stat",
    ),
    "rpe1": DatasetRecord(
        name="rpe1",
        description="Replogle et al. 2022, RPE1 day-7 essential-gene CRISPRi screen.",
        counts_file="rpe1_qc_deg_matched_ctrl_idx_all_ot.h5ad",
        counts_archive=DATASETS_ARCHIVE,
        stats_file="summary_stats.xlsx",
        stats_archive=SUMMARY_STATS_ARCHIVE,
        stats_sheet="TabC_RPE1_summary_statistic",
    ),
    "k562": DatasetRecord(
        name="k562",
        description="Replogle et al. 2022, K562 essential-gene CRISPRi screen (day 6).",
        counts_file="k562_qc_deg_matched_ctrl_idx_all_ot.h5ad",
        counts_archive=DATASETS_ARCHIVE,
        stats_file="summary_stats.xlsx",
        stats_archive=SUMMARY_STATS_ARCHIVE,
        stats_sheet="TabB_K562_day6_summary_stat",
    ),
    "adamson": DatasetRecord(
        name="adamson",
        description="Adamson et al. 2016, unfolded-protein-response CRISPRi screen in K562.",
        counts_file="adamson_qc_deg_matched_ctrl_idx_all_ot.h5ad",
        counts_archive=DATASETS_ARCHIVE,
        stats_file="summary_stats_adamson.csv",
        stats_archive=SUMMARY_STATS_ARCHIVE,
    ),
}


class UnknownDatasetError(UserError, ValueError):
    """A dataset name that is neither registered nor a path to an ``.h5ad`` file."""


def is_local_dataset(name: str) -> bool:
    """Whether ``name`` names a user's own counts file rather than a registered dataset."""
    return name.endswith(".h5ad") or os.sep in name or "/" in name


def get_dataset_record(name: str) -> DatasetRecord:
    """The registry record for ``name``; a clear error listing the choices otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(
            f"Unknown dataset {name!r}. Choose one of {sorted(DATASETS)} or give a path to your own "
            "counts file ending in .h5ad (e.g. --dataset data/my_screen.h5ad)."
        ) from None
