"""Timing samples for the benchmarks: a warm-up, then ``rounds`` timed runs; each figure is
printed as median and p90 with a baseline from the same run and the ratio between them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(action: Callable[[], object], rounds: int) -> list[float]:
    action()  # warm-up: imports, connections, caches
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return samples


def p90(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def report(
    name: str, samples: list[float], baseline: list[float], base_name: str, width: int = 28
) -> None:
    median, base = statistics.median(samples), statistics.median(baseline)
    print(
        f"{name:<{width}} median {median * 1000:8.2f} ms  p90 {p90(samples) * 1000:8.2f} ms  "
        f"| baseline {base_name}: {base * 1000:7.3f} ms  ratio {median / base:6.1f}x"
    )
