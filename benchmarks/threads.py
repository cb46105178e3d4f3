"""Training speed with and without busy neighbours on the same cores, per thread setting.

Each setting runs ``benchmarks/train_step.py`` (the laptop config's model on the default screen's
shape) in a fresh process, once on a quiet machine and once beside ``--neighbours`` processes
that keep a core busy each (what a second run, a test worker or a notebook does to a laptop).
Settings: torch's default threads with OpenMP's default wait (long spinning: torch's own
default), the same threads spinning briefly before they sleep (``GOMP_SPINCOUNT=3000``, what
``import gpo_vae`` sets unless the user set a wait policy or spin count), sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``), and one thread.

    python benchmarks/threads.py                 # 2 neighbours, 150 steps per setting
    python benchmarks/threads.py --neighbours 1 --steps 300
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default threads, OpenMP's default wait (torch's)": {},
    "default threads, short spin (gpo_vae's)": {"GOMP_SPINCOUNT": "3000"},
    "default threads, passive wait": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}


def _busy() -> None:
    while True:
        pass


def _steps_per_second(env: dict[str, str], steps: int) -> tuple[float, int]:
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "train_step.py"),
        "--device",
        "cpu",
        "--config",
        str(ROOT / "configs" / "gpo_vae_plus_custom.yaml"),
        "--genes",
        "1200",
        "--nodes",
        "60",
        "--perturbed",
        "50",
        "--steps",
        str(steps),
    ]
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    }
    out = subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"([\d.]+) steps/s", out).group(1))
    threads = int(re.search(r"threads=(\d+)", out).group(1))
    return rate, threads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--neighbours", type=int, default=2, help="busy processes beside training")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.steps} steps per setting; load average {os.getloadavg()[0]:.2f}")
    rows = []
    for neighbours in (0, args.neighbours):
        busy = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(neighbours)]
        for process in busy:
            process.start()
        time.sleep(1.0 if busy else 0.0)
        try:
            for name, env in SETTINGS.items():
                rate, threads = _steps_per_second(env, args.steps)
                rows.append((neighbours, name, threads, rate))
                print(
                    f"  {neighbours} busy neighbours  {name:<46} threads={threads}  {rate:7.2f} steps/s",
                    flush=True,
                )
        finally:
            for process in busy:
                process.terminate()
    print("\nslowdown from the neighbours (steps/s quiet ÷ steps/s busy):")
    for name in SETTINGS:
        quiet = next(r for n, s, _, r in rows if n == 0 and s == name)
        loaded = next(r for n, s, _, r in rows if n == args.neighbours and s == name)
        print(f"  {name:<46} {quiet / loaded:5.1f}×")


if __name__ == "__main__":
    main()
