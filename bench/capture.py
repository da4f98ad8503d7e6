"""Benchmark of the capture service's image work, on one core. R1, R3

Prints, for a generated set of 1280x720 photographed forms, the decode rate and the median
milliseconds per frame of each single decoder and of the combination, by degradation
category; then the photo pipeline's frames per second at 1280x720. Ratios are against
baselines measured in the same run (the best single decoder; the 30 frames/s target).

    .venv/bin/python bench/capture.py [--per-category 25] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.* helpers, run as `.venv/bin/python bench/NAME.py`

from tests.capture_scenes import TEST_ID, astronaut_frame, qr_modules  # noqa: E402

from fieldkit.capture.appid import ApplicationIdRefused, read_application_id  # noqa: E402
from fieldkit.capture.photo import PhotoAnalyzer  # noqa: E402
from fieldkit.capture.qr import (  # noqa: E402
    DEFAULT_ATTEMPTS,
    Attempt,
    FormReader,
    decode_opencv,
    decode_zbar,
    decode_zxing,
)
from fieldkit.capture.synthetic import DEGRADATIONS, photographed_form  # noqa: E402


def one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)


def single(decoder: Callable[[np.ndarray], list[bytes]]) -> Callable[[np.ndarray], bool]:
    def run(frame: np.ndarray) -> bool:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        for payload in decoder(gray):
            try:
                if read_application_id(payload).digits == TEST_ID:
                    return True
            except ApplicationIdRefused:
                continue
        return False

    return run


def combined(reader: FormReader) -> Callable[[np.ndarray], bool]:
    def run(frame: np.ndarray) -> bool:
        found = reader.read(frame).application_id
        return found is not None and found.digits == TEST_ID

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    one_core()

    rng = np.random.default_rng(args.seed)
    modules = qr_modules(f"https://example.jp/apply/?id={TEST_ID}&lang=ja".encode())
    frames = {
        cat: [photographed_form(modules, cat, rng) for _ in range(args.per_category)]
        for cat in DEGRADATIONS
    }
    with_opencv = FormReader((*DEFAULT_ATTEMPTS, Attempt("opencv", decode_opencv)))
    methods: dict[str, Callable[[np.ndarray], bool]] = {
        "zxing-cpp": single(decode_zxing),
        "zbar": single(decode_zbar),
        "opencv": single(decode_opencv),
        "combination": combined(FormReader()),
        "combination+opencv": combined(with_opencv),
    }
    singles = ("zxing-cpp", "zbar", "opencv")
    print(f"QR decoding, {args.per_category} frames of 1280x720 per category, one core")
    print(f"{'category':<14}" + "".join(f"{m:>26}" for m in methods) + "   comb/best")
    all_ms: dict[str, list[float]] = {m: [] for m in methods}
    worst_ratio = float("inf")
    for cat, items in frames.items():
        row, rates = f"{cat:<14}", {}
        for name, method in methods.items():
            times, ok = [], 0
            for frame in items:
                start = time.perf_counter()
                ok += method(frame)
                times.append((time.perf_counter() - start) * 1000)
            all_ms[name] += times
            rates[name] = ok / len(items)
            row += f"{rates[name]:>14.0%} {statistics.median(times):>7.1f} ms  "
        best = max(rates[s] for s in singles)
        ratio = rates["combination"] / best if best else float("inf")
        worst_ratio = min(worst_ratio, ratio)
        print(row + f"{ratio:>8.2f}")
    print(
        "overall median ms/frame: "
        + ", ".join(f"{m} {statistics.median(v):.1f}" for m, v in all_ms.items())
    )
    comb_median = statistics.median(all_ms["combination"])
    print(
        f"combination rate / best single rate, worst category: {worst_ratio:.2f} (target >= 1.00)"
    )
    print(f"combination median {comb_median:.1f} ms = {comb_median / 10:.2f} x the 10 ms target")

    analyzer = PhotoAnalyzer()
    frame = astronaut_frame(head_mm=33)
    assert analyzer.analyse(frame).passed
    for _ in range(5):
        analyzer.analyse(frame)
    count, start = 0, time.perf_counter()
    previous = None
    while time.perf_counter() - start < 5.0:
        previous = analyzer.analyse(frame, previous).face_centre
        count += 1
    fps = count / (time.perf_counter() - start)
    print(f"photo pipeline (detect, eyes, 11 checks) at 1280x720: {fps:.1f} frames/s")
    print(f"  = {fps / 30:.2f} x the 30 frames/s target")


if __name__ == "__main__":
    main()
