"""Fault drills on the real command, measured: Ctrl-C, SIGKILL, a full disk, a colleague.

    python benchmarks/faults.py [--drills sigint,sigkill,full_disk,second_user,bad_inputs] [--where DIR]

Each drill runs ``redun run workflow.py main`` on a small panel-shaped screen in a throw-away
project copy (tests/fault_drills.py, the same drills the tests assert on) and prints: seconds
from the fault to the process's exit (or to its end, for the colleague's run), lines printed,
what was left on disk, and what the rerun did. ``bad_inputs`` runs the bad inputs of
tests/fault_drills.py (sweep names outside the results tree, unknown options, folders given as
files, …) and prints each one's exit code, lines, whether a traceback or a stray file appeared,
and its last line. The full-disk and colleague drills need root
(a tmpfs mount, a second Unix user); without it they say so and are skipped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fault_drills import (
    drill_bad_inputs,
    drill_full_disk,
    drill_second_user,
    drill_sigint_training,
    drill_sigkill_preprocessing,
    make_sandbox,
)

DRILLS = ("sigint", "sigkill", "full_disk", "second_user", "bad_inputs")


def _left(drill: dict) -> str:
    if "modes" in drill:
        files = sorted(
            {mode for name, mode in drill["modes"].items() if name.endswith(("report.html", "model.pt"))}
        )
        return f"outputs {', '.join(files)}; new outputs of the colleague: {sum(map(len, drill['new_outputs'].values()))}"
    left = drill.get("left", [])
    partial = [name for name in left if ".partial" in name or name.endswith(".tmp")]
    return f"{len(left)} entries, {len(partial)} partial" + (f" ({partial[0]})" if partial else "")


def run(drill: str, where: Path) -> dict:
    folder = where / drill
    folder.mkdir(parents=True)
    if drill == "sigint":
        return drill_sigint_training(make_sandbox(folder, epochs=150))
    if drill == "sigkill":
        return drill_sigkill_preprocessing(make_sandbox(folder))
    box = make_sandbox(folder)
    if drill == "full_disk":
        return drill_full_disk(box)
    box.redun("main", "--dataset", "screens/panel.h5ad")  # the colleague reuses a finished run
    return drill_second_user(box)


def print_bad_inputs(where: Path) -> None:
    rows = drill_bad_inputs(make_sandbox(where / "bad_inputs"), where / "bad_inputs" / "scratch")
    header = ("bad input", "rc", "seconds", "lines", "traceback", "stray files", "last line")
    table = [
        (
            row["drill"],
            str(row["returncode"]),
            f"{row['seconds']:.1f}",
            str(len(row["lines"])),
            "yes" if row["traceback"] else "no",
            str(len(row["written"])),
            row["lines"][-1][:100] if row["lines"] else "",
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    for row in [header, *table]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))
    clear = sum(r["returncode"] == 1 and not r["traceback"] and not r["written"] for r in rows)
    print(f"{clear} of {len(rows)} stopped with one message, no traceback, nothing written outside results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drills", default=",".join(DRILLS))
    parser.add_argument("--where", type=Path, help="folder for the project copies (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        where = args.where or Path(scratch)
        rows = []
        for name in args.drills.split(","):
            if name.strip() == "bad_inputs":
                print_bad_inputs(where)
                continue
            try:
                drill = run(name.strip(), where)
            except PermissionError as err:
                print(f"{name}: skipped ({err})", flush=True)
                continue
            seconds = drill.get("seconds_to_stop", drill.get("seconds"))
            rows.append(
                (
                    drill["drill"],
                    f"{seconds:.1f}",
                    str(len(drill["lines"])),
                    _left(drill),
                    drill["rerun"],
                    drill["lines"][-1][:110],
                )
            )
            print(f"{name}: done", flush=True)
    if not rows:
        return
    header = ("drill", "seconds", "lines printed", "left on disk", "rerun", "last line")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
