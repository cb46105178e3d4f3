"""Fault drills on the real ``redun run workflow.py main``: what a user meets first, measured.

Each drill runs the command in a :class:`~tests.workflow_sandbox.WorkflowSandbox`, injects one
fault (Ctrl-C during training, SIGKILL during preprocessing, a full disk, a colleague on the
shared results root) and returns what happened: seconds to stop, lines printed, what was left
on disk, and what the rerun did. ``tests/test_faults.py`` asserts on them and
``benchmarks/faults.py`` prints them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq
from tests.workflow_sandbox import REPO_ROOT, TINY_SECTIONS, WorkflowSandbox

SCREEN = {"n_perturbations": 12, "n_genes": 400, "cells_per_perturbation": 80.0, "control_fraction": 0.25}


def make_sandbox(where: Path, epochs: int = 2) -> WorkflowSandbox:
    """A project copy with a tiny custom config (``epochs`` epochs, no early stop) and a
    panel-shaped screen ``screens/panel.h5ad``."""
    box = WorkflowSandbox.create(where)
    box.shrink_configs(TINY_SECTIONS, ("gpo_vae_plus_custom",))
    path = box.root / "configs" / "gpo_vae_plus_custom.yaml"
    raw = load_yaml(path)
    raw["preprocess"]["qc"]["doublets"] = False
    raw["training"].update(max_epochs=epochs, max_steps=None, early_stopping_patience=epochs)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (box.root / "screens").mkdir(exist_ok=True)
    config = SyntheticConfig.preset("panel", **SCREEN)
    saved_layout(simulate_perturbseq(config).adata, "plain").write_h5ad(box.root / "screens" / "panel.h5ad")
    return box


MAIN = ("main", "--dataset", "screens/panel.h5ad")


def lines_of(text: str) -> list[str]:
    """Printed lines, a progress bar's carriage-return updates counted once."""
    return [line.split("\r")[-1] for line in text.splitlines() if line.split("\r")[-1].strip()]


def _wait_for(condition, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def _stop(process: subprocess.Popen, sig: int) -> float:
    """Send ``sig`` to the process group (as a terminal's Ctrl-C does); seconds until it exits."""
    start = time.monotonic()
    os.killpg(process.pid, sig)
    process.wait(timeout=120)
    return time.monotonic() - start


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_dir())


def drill_sigint_training(box: WorkflowSandbox, *args: str) -> dict[str, Any]:
    """Ctrl-C once a training checkpoint exists; then the same command again."""
    execution, process = box.start(*MAIN, *args)
    runs = box.root / "results" / "panel" / "runs"
    found = _wait_for(lambda: any(runs.glob("*/checkpoints/last.ckpt")), timeout=300)
    assert found, box.output(execution)
    seconds = _stop(process, signal.SIGINT)
    output = box.output(execution)
    run_dir = next(runs.glob("*/checkpoints/last.ckpt")).parent.parent
    left = sorted(p.name for p in run_dir.iterdir())
    _, rerun = box.redun(*MAIN, *args)
    events = [line for line in (run_dir / "events.jsonl").read_text().splitlines() if '"fit"' in line]
    return {
        "drill": "SIGINT during training, then rerun",
        "returncode": process.returncode,
        "seconds_to_stop": seconds,
        "lines": lines_of(output),
        "left": left,
        "run_dir": run_dir,
        "rerun": "resumed" if '"resume_from_epoch": null' not in events[-1] else "started over",
        "rerun_events": events,
        "rerun_output": rerun.stdout + rerun.stderr,
    }


def drill_sigkill_preprocessing(box: WorkflowSandbox, *args: str) -> dict[str, Any]:
    """SIGKILL the whole run while the artifact is being written (or, when that is too quick to
    catch, while preprocessing runs); then the same command again."""
    execution, process = box.start(*MAIN, *args)
    preprocessed = box.root / "results" / "panel" / "preprocessed"
    _wait_for(lambda: "preprocess_dataset" in box.output(execution), timeout=300)
    caught = _wait_for(lambda: any(preprocessed.glob(".*.partial")), timeout=30, poll=0.005)
    seconds = _stop(process, signal.SIGKILL)
    left = [p.name for p in preprocessed.iterdir()] if preprocessed.is_dir() else []
    _, _rerun = box.redun(*MAIN, *args)
    after = [p.name for p in preprocessed.iterdir()]
    return {
        "drill": "SIGKILL during preprocessing, then rerun",
        "killed_while": "writing the artifact" if caught else "preprocessing",
        "seconds_to_stop": seconds,
        "lines": lines_of(box.output(execution)),
        "left": sorted(left),
        "after_rerun": sorted(after),
        "rerun": "recomputed and completed"
        if any((preprocessed / n / ".complete").exists() for n in after)
        else "?",
    }


@contextlib.contextmanager
def small_filesystem(size_kb: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` KB (read-only when asked), mounted for the block; needs root and
    the right to mount (raises ``PermissionError`` otherwise)."""
    mount = Path(tempfile.mkdtemp(prefix="gpo-vae-fs-"))
    options = f"size={size_kb}k" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        raise PermissionError(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def run_failing(
    box: WorkflowSandbox, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The command, expected to fail: its CompletedProcess (no AssertionError on a non-zero exit)."""
    command = box.command("run", "--execution-id", str(uuid.uuid4()), "workflow.py", *args)
    return subprocess.run(
        command, cwd=box.root, env=box.environment(env), capture_output=True, text=True, timeout=600
    )


def drill_full_disk(box: WorkflowSandbox, size_kb: int = 1500) -> dict[str, Any]:
    """Results on a filesystem too small for the artifact."""
    with small_filesystem(size_kb) as mount:
        start = time.monotonic()
        result = run_failing(box, *MAIN, "--results-dir", str(mount / "results"))
        seconds = time.monotonic() - start
        left = _listing(mount)
    return {
        "drill": f"full disk ({size_kb} KB results filesystem)",
        "returncode": result.returncode,
        "seconds_to_stop": seconds,
        "lines": lines_of(result.stdout + result.stderr),
        "left": left,
        "rerun": "n/a",
    }


def _can_make_users() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") is not None and shutil.which("runuser") is not None


@contextlib.contextmanager
def _traversable(path: Path) -> Iterator[None]:
    """Let other users traverse (not list) the folders above ``path`` for the block: the
    interpreter often lives under root's home (pyenv), which is 0700."""
    changed = []
    for folder in path.resolve().parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            os.chmod(folder, (mode & 0o7777) | 0o001)
            changed.append((folder, mode & 0o7777))
    try:
        yield
    finally:
        for folder, mode in changed:
            os.chmod(folder, mode)


def drill_second_user(box: WorkflowSandbox) -> dict[str, Any]:
    """The first user runs ``main`` on a group-shared results root (umask 002); a colleague, in
    the same group, runs the same command from a checkout of their own: it must read every
    output and reuse it, training nothing."""
    if not _can_make_users():
        raise PermissionError("making a second Unix user needs root, useradd and runuser")
    tag = uuid.uuid4().hex[:6]
    group, user = f"gpovae{tag}", f"colleague{tag}"
    subprocess.run(["groupadd", group], check=True)
    subprocess.run(["useradd", "-M", "-g", group, "-s", "/bin/sh", user], check=True)
    shared = Path(tempfile.mkdtemp(prefix="gpo-vae-shared-"))
    try:
        gid = grp.getgrnam(group).gr_gid
        os.chmod(shared, 0o2775)
        os.chown(shared, -1, gid)
        results = shared / "results"
        umask = lambda: os.umask(0o002)  # noqa: E731 (a preexec function)
        first_command = box.command("run", "workflow.py", *MAIN, "--results-dir", str(results))
        first = subprocess.run(
            first_command,
            cwd=box.root,
            env=box.environment(),
            capture_output=True,
            text=True,
            preexec_fn=umask,
        )
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        modes = {
            str(p.relative_to(results)): oct(p.stat().st_mode & 0o7777)
            for p in results.rglob("*")
            if p.name in ("report.html", "model.pt", "run.json", "artifact.h5ad")
            or p.parent.name in ("runs", "evaluation", "preprocessed")
        }
        # the colleague's own checkout and home, group-readable
        theirs = shared / "checkout"
        shutil.copytree(
            box.root, theirs, ignore=shutil.ignore_patterns(".redun", "results", "*.log", "screens")
        )
        (theirs / ".redun").mkdir()
        os.symlink("../redun.ini", theirs / ".redun" / "redun.ini")
        shutil.copytree(box.root / "screens", theirs / "screens")
        home = shared / "home"
        home.mkdir()
        uid = pwd.getpwnam(user).pw_uid
        for path in [theirs, *theirs.rglob("*"), home]:
            os.lchown(path, uid, gid)
        before = {
            p: sorted(q.name for q in (results / "panel" / p).iterdir())
            for p in ("preprocessed", "runs", "evaluation")
        }
        env = {**box.environment(), "HOME": str(home), "MPLCONFIGDIR": str(home / "mpl")}
        redun = " ".join(box.command("run", "workflow.py", *MAIN, "--results-dir", str(results)))
        # runuser sets HOME from the passwd entry (a home that does not exist here): set it again
        shell = f"umask 002; export HOME={home}; exec {redun}"
        command = ["runuser", "-u", user, "--", "sh", "-c", shell]
        with _traversable(Path(os.path.realpath(sys.executable))):
            start = time.monotonic()
            second = subprocess.run(command, cwd=theirs, env=env, capture_output=True, text=True, timeout=600)
            seconds = time.monotonic() - start
        after = {
            p: sorted(q.name for q in (results / "panel" / p).iterdir())
            for p in ("preprocessed", "runs", "evaluation")
        }
        report = next((results / "panel" / "evaluation").glob("*/report.html"))
        readable = subprocess.run(
            ["runuser", "-u", user, "--", "head", "-c", "15", str(report)], capture_output=True, text=True
        )
        run_dir = next((results / "panel" / "runs").glob("*/model.pt")).parent
        events = (run_dir / "events.jsonl").read_text()
        return {
            "drill": "a colleague (second Unix user) on the shared results root",
            "returncode": second.returncode,
            "seconds": seconds,
            "lines": lines_of(second.stdout + second.stderr),
            "modes": modes,
            "new_outputs": {k: sorted(set(after[k]) - set(before[k])) for k in after},
            "report_readable": readable.returncode == 0 and readable.stdout.startswith("<!DOCTYPE"),
            "reused_events": events.count('"reused"'),
            "rerun": "reused" if after == before and second.returncode == 0 else "recomputed",
            "output": second.stdout + second.stderr,
        }
    finally:
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)
        shutil.rmtree(shared, ignore_errors=True)


def bad_input_cases(box: WorkflowSandbox, scratch: Path) -> dict[str, tuple[str, ...]]:
    """Bad inputs a user meets (name → command arguments), the files they need made in
    ``scratch``: each must stop with one clear last line and write nothing outside results."""
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "folder.h5ad").mkdir(exist_ok=True)
    for name, line in {"absolute": str(scratch / "elsewhere"), "dotdot": "../../../../x"}.items():
        (scratch / f"sweep_{name}.yaml").write_text(
            f"name: {line}\nmetric: val/loss\nparameters:\n  training.seed: [0]\n"
        )
    guides = box.root / "screens" / "guides.h5ad"
    if not guides.exists():  # the panel screen labelled by guide: GENE_1, GENE_2
        import anndata as ad

        screen = ad.read_h5ad(box.root / "screens" / "panel.h5ad")
        labels = screen.obs["gene"].astype(str)
        suffix = np.where(np.arange(screen.n_obs) % 2 == 0, "_1", "_2")
        screen.obs["gene"] = np.where(labels == "non-targeting", labels, labels + suffix)
        screen.write_h5ad(guides)
    panel = ("--dataset", "screens/panel.h5ad")
    screens = _odd_screens(box, scratch)
    configs = _odd_configs(box, scratch)
    (scratch / "dangling").unlink(missing_ok=True)
    (scratch / "dangling").symlink_to(scratch / "nowhere")
    return {
        **{
            f"screen: {name}": ("main", "--dataset", str(path), *extra)
            for name, (path, extra) in screens.items()
        },
        **{f"config: {name}": (cmd, *panel, flag, str(path)) for name, (cmd, flag, path) in configs.items()},
        "--results-dir on a dangling symlink": ("main", *panel, "--results-dir", str(scratch / "dangling")),
        "--results-dir ''": ("main", *panel, "--results-dir", ""),
        "sweep name absolute": ("sweep", *panel, "--sweep", str(scratch / "sweep_absolute.yaml")),
        "sweep name ../../../../x": ("sweep", *panel, "--sweep", str(scratch / "sweep_dotdot.yaml")),
        "--max-concurrent 0": ("sweep", *panel, "--max-concurrent", "0"),
        "--combination-separator _ on guide labels": (
            "main",
            "--dataset",
            "screens/guides.h5ad",
            "--combination-separator",
            "_",
        ),
        "unknown --executor": ("main", *panel, "--executor", "nope"),
        "unknown --synthetic-preset": ("main", "--synthetic-preset", "nope"),
        "a folder named x.h5ad": ("main", "--dataset", str(scratch / "folder.h5ad")),
        "--config a folder": ("main", *panel, "--config", str(scratch)),
        "--data-dir missing": ("main", "--dataset", "rpe1", "--data-dir", str(scratch / "nonexistent")),
        "evaluate --run missing": ("evaluate", "--run", str(scratch / "no-run")),
    }


def _odd_screens(box: WorkflowSandbox, scratch: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Screens cut from the panel screen that break the run's assumptions (name → file, options)."""
    import anndata as ad

    screen = ad.read_h5ad(box.root / "screens" / "panel.h5ad")
    labels = screen.obs["gene"].astype(str).to_numpy()
    control = np.flatnonzero(labels == "non-targeting")
    perturbed = np.flatnonzero(labels != "non-targeting")
    line = np.where(np.arange(screen.n_obs) % 2 == 0, "A", "B")
    cases: dict[str, tuple[Any, tuple[str, ...]]] = {}

    def cut(name: str, rows: np.ndarray, batches: bool = False, **obs: Any) -> Path:
        part = screen[np.sort(rows)].copy()
        if batches:
            part.obs["line"] = line[np.sort(rows)]
        for column, values in obs.items():
            part.obs[column] = values
        path = scratch / f"{name}.h5ad"
        part.write_h5ad(path)
        return path

    by_line = ("--batch-key", "line")
    b_controls = control[line[control] == "B"]
    cases["a batch with no controls"] = (
        cut("batch_no_controls", np.setdiff1d(np.arange(screen.n_obs), b_controls), True),
        by_line,
    )
    cases["a batch with 2 controls"] = (
        cut("batch_two_controls", np.setdiff1d(np.arange(screen.n_obs), b_controls[2:]), True),
        by_line,
    )
    cases["4 controls in all"] = (cut("four_controls", np.r_[control[:4], perturbed]), ())
    cases["a 2-cell screen"] = (
        cut("two_cells", np.r_[control[:1], perturbed[:1]]),
        ("--min-perturbations", "1"),
    )
    names, counts = np.unique(labels[perturbed], return_counts=True)
    first = str(names[np.argmax(counts)])  # the largest perturbation: it passes the filters
    cases["one perturbation held out"] = (
        cut("one_perturbation", np.r_[control, np.flatnonzero(labels == first)]),
        ("--min-perturbations", "1", "--split", "heldout_perturbations"),
    )
    nan_labels = labels.copy()
    nan_labels[labels == first] = "nan"
    cases["a label 'nan'"] = (cut("nan_label", np.arange(screen.n_obs), gene=nan_labels), ())
    return cases


def _odd_configs(box: WorkflowSandbox, scratch: Path) -> dict[str, tuple[str, str, Path]]:
    """Config and sweep files a user may write (name → command, option, file)."""
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
    )
    files = {
        "billion laughs": ("main", "--config", laughs + "training: {lr: 0.001}\n"),
        "billion laughs sweep": (
            "sweep",
            "--sweep",
            "name: s\n" + laughs + "parameters:\n  model.hop: [1]\n",
        ),
        "a key written twice": ("main", "--config", "training:\n  lr: 0.001\n  lr: 0.1\n"),
        "an empty config": ("main", "--config", ""),
    }
    out = {}
    for name, (command, flag, text) in files.items():
        path = scratch / (name.replace(" ", "_") + ".yaml")
        path.write_text(text)
        out[name] = (command, flag, path)
    return out


def drill_bad_inputs(box: WorkflowSandbox, scratch: Path) -> list[dict[str, Any]]:
    """Run every :func:`bad_input_cases` case: return code, lines printed, the last line, whether
    a traceback was printed and whether anything appeared outside ``results/``."""
    rows = []
    for name, args in bad_input_cases(box, scratch).items():
        before = set(_listing(scratch)) | {p.name for p in box.root.iterdir()}
        start = time.monotonic()
        result = run_failing(box, *args)
        seconds = time.monotonic() - start
        lines = lines_of(result.stdout + result.stderr)
        after = set(_listing(scratch)) | {p.name for p in box.root.iterdir()}
        new = sorted(p for p in after - before if not p.endswith(".log"))
        rows.append(
            {
                "drill": name,
                "returncode": result.returncode,
                "seconds": seconds,
                "lines": lines,
                "traceback": any(line.startswith("Traceback") for line in lines),
                "written": new,
            }
        )
    return rows


__all__ = [
    "MAIN",
    "REPO_ROOT",
    "bad_input_cases",
    "drill_bad_inputs",
    "drill_full_disk",
    "drill_second_user",
    "drill_sigint_training",
    "drill_sigkill_preprocessing",
    "lines_of",
    "make_sandbox",
    "run_failing",
    "small_filesystem",
]
