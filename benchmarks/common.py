"""Measurement helpers shared by the benchmarks: medians of repeated runs, peak memory measured
in a child process, and one table format. Ratios are taken within one run, since the machines
are shared and noisy."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python_tests"))  # references.py: the plain PyTorch formulations


# The clock of every timing: wall time, or with --cpu-time the CPU time of the process (all its
# threads), which a machine shared with other jobs inflates far less than wall time; meant for one
# thread (--threads 1), where no pool thread spins waiting for work.
CLOCK: Callable[[], float] = time.perf_counter


def median_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 2) -> float:
    """Median wall time of fn() over `repeat` runs after `warmup` runs (CUDA synchronized)."""
    return interleaved_median_seconds({"": fn}, repeat, warmup)[""]


def interleaved_median_seconds(fns: dict[str, Callable[[], object]], repeat: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median wall time of each fn() over `repeat` rounds after `warmup` rounds, a round running
    every fn once in turn: variants compared in one run see the same machine state (other jobs,
    the process's memory warming up) instead of one variant's runs all coming first."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeat):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = CLOCK()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(CLOCK() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory is measured on Linux only)")


def added_peak_rss_bytes(fn: Callable[[], object]) -> int:
    """The peak resident memory fn() adds to what is resident when it starts. The high-water
    mark (VmHWM) is reset first, so that an earlier peak (a warm-up's weight-sized buffers)
    cannot hide part of fn's; measure_in_child's glibc settings make freed tensors leave the
    resident set rather than stay in a heap that fn would reuse unseen."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
    base = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - base


# glibc's malloc maps every block from 64 KiB on its own and unmaps it on free (a fixed threshold:
# by default it grows after frees, up to 32 MiB, and such blocks then come from the heap).
_EXACT_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}


def measure_in_child(script: Path, *args: str) -> dict:
    """Runs `python script --child args...` and returns the JSON it prints: peak memory is
    measured in a fresh process (added_peak_rss_bytes), where no other variant's memory lies."""
    out = subprocess.run([sys.executable, str(script), "--child", *args], check=True,
                         capture_output=True, text=True, env={**os.environ, **_EXACT_MALLOC}).stdout
    return json.loads(out.strip().splitlines()[-1])


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def cli(run: Callable[..., list[dict]], doc: str) -> None:
    """The command line every benchmark shares: --device, --quick, --json FILE."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="a reduced run")
    parser.add_argument("--json", help="also write the records to this file")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time by the process's CPU time instead of wall time (for a busy machine; use --threads 1)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    records = run(args.device, args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=2)
