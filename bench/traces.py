"""Workload traces: lists of (arrival time in seconds, iterations), sorted by time.

A trace file is CSV with a header `time,iterations` (seconds from the start, and the job's
iteration count), one job per line; lines starting with # are ignored.
"""

from __future__ import annotations

import csv
import math
import random

Trace = list[tuple[float, int]]


def steady(
    duration: float = 3600, interval: float = 4.0, iterations: int = 1_000_000, seed: int = 1
) -> Trace:
    """One job every `interval` seconds on average (Poisson arrivals)."""
    rng = random.Random(seed)
    t, out = 0.0, []
    while t < duration:
        t += rng.expovariate(1 / interval)
        out.append((t, iterations))
    return out


def on_off(
    duration: float = 3600,
    period: float = 180,
    on: float = 60,
    rate: float = 2.0,
    iterations: int = 1_000_000,
    seed: int = 2,
) -> Trace:
    """Bursts: `rate` jobs/s for `on` seconds at the start of every `period`, then quiet."""
    rng = random.Random(seed)
    out = []
    for start in range(0, int(duration), int(period)):
        t = float(start)
        while True:
            t += rng.expovariate(rate)
            if t >= start + on:
                break
            out.append((t, iterations))
    return out


def spike(
    duration: float = 3600,
    at: float = 600,
    jobs: int = 400,
    iterations: int = 1_000_000,
    background: float = 30.0,
    seed: int = 3,
) -> Trace:
    """A quiet background with one spike of `jobs` jobs arriving within a few seconds."""
    rng = random.Random(seed)
    out = steady(duration, background, iterations, seed)
    out += [(at + rng.uniform(0, 5), iterations) for _ in range(jobs)]
    return sorted(out)


def diurnal(
    duration: float = 4 * 3600, peak_rate: float = 1.0, iterations: int = 1_000_000, seed: int = 4
) -> Trace:
    """Arrival rate following a sine from near zero to `peak_rate` jobs/s and back."""
    rng = random.Random(seed)
    out, t = [], 0.0
    while t < duration:
        t += rng.expovariate(peak_rate)  # thinning of a Poisson process
        rate = peak_rate * (0.05 + 0.95 * math.sin(math.pi * t / duration) ** 2)
        if t < duration and rng.random() < rate / peak_rate:
            out.append((t, iterations))
    return out


def tiny(
    jobs: int = 50_000, at: float = 60.0, spread: float = 10.0, iterations: int = 1, seed: int = 5
) -> Trace:
    """Many tiny jobs at once: `jobs` jobs of `iterations` each within `spread` seconds, the
    work all per-job overhead."""
    rng = random.Random(seed)
    return sorted((at + rng.uniform(0, spread), iterations) for _ in range(jobs))


def load(path: str) -> Trace:
    out = []
    with open(path, newline="") as f:
        rows = (line for line in f if line.strip() and not line.startswith("#"))
        for row in csv.DictReader(rows):
            out.append((float(row["time"]), int(row["iterations"])))
    return sorted(out)


BUILTIN = {
    "steady": steady,
    "on-off": on_off,
    "spike": spike,
    "diurnal": diurnal,
    "tiny": tiny,
}
