"""Atomic writes and per-output locks (gpo_vae.io)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpo_vae.io import exclusive_lock, lock_path, write_json_atomic, write_text_atomic

HOLD = textwrap.dedent(
    """
    import sys, time
    from gpo_vae.io import exclusive_lock
    with exclusive_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
        open(sys.argv[3], "a").write("first done\\n")
    """
)


def test_atomic_writes_leave_only_the_target(tmp_path):
    write_text_atomic("a\n", tmp_path / "x.txt")
    write_json_atomic({"b": 1}, tmp_path / "y.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt", "y.json"]
    assert (tmp_path / "x.txt").read_text() == "a\n" and '"b": 1' in (tmp_path / "y.json").read_text()


def test_a_second_process_waits_for_the_holder_and_is_told_who_holds_it(tmp_path, capfd):
    target, log = tmp_path / "runs" / "abc", tmp_path / "order.txt"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), "1.5", str(log)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    with exclusive_lock(target) as path:
        waited = time.monotonic() - started
        log.open("a").write("second\n")
    holder.wait(timeout=30)
    assert log.read_text() == "first done\nsecond\n"
    assert waited > 0.5 and path == lock_path(target) == tmp_path / "runs" / ".abc.lock"
    assert f"waiting for {target}: pid {holder.pid} on" in capfd.readouterr().err


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path):
    target = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), "60", str(tmp_path / "never")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=30)
    with open(lock_path(target), "a") as handle:  # free at once: the kernel released the dead holder's lock
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    with exclusive_lock(target):
        pass
    assert not (tmp_path / "never").exists()


def test_the_lock_is_released_on_error(tmp_path):
    with pytest.raises(RuntimeError), exclusive_lock(tmp_path / "out"):
        raise RuntimeError("boom")
    with exclusive_lock(tmp_path / "out"):
        pass
    assert Path(lock_path(tmp_path / "out")).exists()


def test_folder_swapped_in_replaces_the_target_only_when_the_block_ends(tmp_path):
    from gpo_vae.io import folder_swapped_in

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), folder_swapped_in(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed while writing")
    assert [p.name for p in target.iterdir()] == ["old.txt"]  # untouched
    with folder_swapped_in(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing visible before the block ends
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left beside it


def test_a_file_is_hashed_once_per_process_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every stage that records the screen's checksum asks for it; the file is read once, and
    read again when it is rewritten (another identity: size, inode or modification time)."""
    import hashlib
    import os

    from gpo_vae import io

    path = tmp_path / "screen.h5ad"
    path.write_bytes(b"cells" * 1000)
    opened: list[Path] = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open, raising=False)
    first = io.sha256_of(path)
    assert first == hashlib.sha256(b"cells" * 1000).hexdigest()
    assert io.sha256_of(path) == first and opened == [path]
    path.write_bytes(b"other" * 1000)  # same size, rewritten in place
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert io.sha256_of(path) == hashlib.sha256(b"other" * 1000).hexdigest()
    assert opened == [path, path]


def test_a_screen_is_described_once_per_process_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """main checks a user's screen and the dataset summary describes it: obs and var are read
    once; another layout or a changed file reads them again."""
    import anndata as ad

    from gpo_vae.data import acquire
    from gpo_vae.data.contract import DataContractError
    from gpo_vae.data.layout import ScreenLayout
    from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq

    path = tmp_path / "screen.h5ad"
    screen = simulate_perturbseq(
        SyntheticConfig.preset("default", n_perturbations=6, n_genes=200, cells_per_perturbation=20.0)
    )
    screen.adata.write_h5ad(path)
    reads: list[str] = []
    real = ad.read_h5ad

    def counting_read(file, *args, **kwargs):
        reads.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(acquire.ad, "read_h5ad", counting_read)
    first = acquire.describe_counts(path)
    first["cells"] = -1  # a caller changing its copy changes no one else's
    again = acquire.describe_counts(path)
    assert len(reads) == 1 and again["cells"] == screen.adata.n_obs
    acquire.describe_counts(path, ScreenLayout(control_label="non-targeting", counts_layer="X"))
    assert len(reads) == 1  # the layout as the contract resolved it (the dataset summary's)
    with pytest.raises(DataContractError, match="--counts-layer 'umis': no such layer"):
        acquire.describe_counts(path, ScreenLayout(counts_layer="umis"))
    screen.adata[: screen.adata.n_obs // 2].copy().write_h5ad(path)
    assert acquire.describe_counts(path)["cells"] == screen.adata.n_obs // 2 and len(reads) == 2


def test_file_memo_remembers_per_file_and_variant_and_forgets_the_file_used_longest_ago(tmp_path: Path):
    """A value is computed once per (file, variant) while the file is unchanged; at most
    ``max_files`` files are kept (all variants of the one used longest ago go first); a value
    ``keep`` refuses, a file changed while computed and a missing file are not remembered;
    aliases are remembered with the value."""
    import os

    from gpo_vae.io import FileMemo

    paths = [tmp_path / f"{name}.txt" for name in "abc"]
    for path in paths:
        path.write_text(path.stem)
    calls: list[tuple[str, object]] = []

    def reader(path: Path, variant: object = None):
        return lambda: calls.append((path.stem, variant)) or f"{path.read_text()}:{variant}"

    memo = FileMemo(max_files=2)
    a, b, c = paths
    assert memo.recall(a, reader(a)) == "a:None"
    assert memo.recall(a, reader(a)) == "a:None" and calls == [("a", None)]
    assert memo.recall(a, reader(a, 1), variant=1, aliases=lambda value: [2]) == "a:1"
    assert memo.recall(a, reader(a, 2), variant=2) == "a:1"  # the alias: nothing computed
    assert len(calls) == 2
    memo.recall(b, reader(b))
    memo.recall(a, reader(a))  # a used after b: b is the one used longest ago
    memo.recall(c, reader(c))
    assert len(calls) == 4
    memo.recall(a, reader(a, 1), variant=1)
    assert len(calls) == 4  # a and c kept, with a's variants
    memo.recall(b, reader(b))
    assert calls[-1] == ("b", None) and len(calls) == 5  # b was forgotten
    # refused by keep: computed every time
    for _ in range(2):
        memo.recall(c, reader(c, "x"), variant="x", keep=lambda value: False)
    assert calls[-2:] == [("c", "x"), ("c", "x")]

    # the file rewritten while it was read: the value is returned and not remembered
    def rewriting() -> str:
        calls.append(("a", "rewritten"))
        a.write_text("a, longer now")
        os.utime(a, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        return "stale"

    assert memo.recall(a, rewriting, variant="w") == "stale"
    assert memo.recall(a, reader(a, "w"), variant="w") == "a, longer now:w"
    # a missing file: compute's own error, nothing remembered
    with pytest.raises(FileNotFoundError):
        memo.recall(tmp_path / "gone.txt", reader(tmp_path / "gone.txt"))
    memo.clear()
    memo.recall(b, reader(b))
    assert calls[-1] == ("b", None)
    with pytest.raises(ValueError, match="max_files must be ≥ 1"):
        FileMemo(max_files=0)
