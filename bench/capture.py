"""Benchmark of the capture service's image work, on one core. R1, R3

Prints, for a generated set of 1280x720 photographed forms, the decode rate and the median
milliseconds per frame of each single decoder and of the combination, by degradation
category; then, on the annotated real portraits (../shared/data/faces/, each placed in a
1280x720 frame with its head at 34 mm), the crown and chin error in mm at print scale, the
share of heads measured within 1 mm, the second-person detection rate on compositions, and
analysed frames per second on one core, each beside the Haar box-ratio estimate measured in
the same run. With dlib and face_recognition_models importable (they are not dependencies:
PYTHONPATH=DIR after `pip install --target DIR dlib-bin face-recognition-models`), dlib's
HOG detector and 68 landmarks are measured as a third candidate.

    .venv/bin/python bench/capture.py [--per-category 25] [--seed 1] [--photo-only]
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

from tests.capture_scenes import (  # noqa: E402
    TEST_ID,
    annotations,
    eye_to_chin,
    portrait_frame,
    qr_modules,
    with_second_person,
)

from fieldkit.capture.appid import ApplicationIdRefused, read_application_id  # noqa: E402
from fieldkit.capture.haar import HaarHeadEstimate  # noqa: E402
from fieldkit.capture.head import head_outline  # noqa: E402
from fieldkit.capture.photo import Guide, PhotoAnalyzer  # noqa: E402
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


def person(name: str) -> str:
    return name.replace("_", "-").split("-")[0]


def dlib_candidate() -> Callable[[np.ndarray], tuple[int, float | None]] | None:
    """dlib's HOG face detector and 68-point landmarks: faces found, chin row (point 8)."""
    try:
        import dlib  # type: ignore[import-not-found]
        import face_recognition_models  # type: ignore[import-not-found]
    except ImportError:
        return None
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())

    def run(frame: np.ndarray) -> tuple[int, float | None]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        found = sorted(detector(small, 0), key=lambda r: r.area(), reverse=True)
        if not found:
            return 0, None
        r = found[0]
        box = dlib.rectangle(r.left() * 2, r.top() * 2, r.right() * 2, r.bottom() * 2)
        return len(found), float(predictor(gray, box).part(8).y)

    return run


def photo_bench(seconds: float) -> None:
    guide = Guide.for_frame(1280, 720)
    mm = guide.px_per_mm
    analyzer = PhotoAnalyzer()
    haar = HaarHeadEstimate()
    dlib_run = dlib_candidate()
    whole = [a for a in annotations() if a.head_px is not None]
    errors: dict[str, dict[str, list[float]]] = {
        m: {"crown": [], "chin": [], "head": []} for m in ("landmarks", "haar", "dlib")
    }
    frames = []
    for a in whole:
        frame, _ = portrait_frame(a, head_mm=34.0, margin_mm=4.0)
        frames.append(frame)
        true_crown, true_chin = guide.y + 4.0 * mm, guide.y + 38.0 * mm
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        face = analyzer.find_faces(rgb)[0]
        points, _ = analyzer.models.mesh(rgb, face)
        outline = head_outline(frame, points)
        boxes = haar.find_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        results = {"landmarks": (outline.crown_y, outline.chin_y)}
        if boxes:
            results["haar"] = haar.crown_and_chin(boxes[0])
        if dlib_run is not None:
            _, chin = dlib_run(frame)
            if chin is not None:
                results["dlib"] = (float("nan"), chin)
        for method, (crown, chin) in results.items():
            errors[method]["crown"].append((crown - true_crown) / mm)
            errors[method]["chin"].append((chin - true_chin) / mm)
            errors[method]["head"].append(((chin - crown) - (true_chin - true_crown)) / mm)
    print(f"\nHead on {len(whole)} annotated real portraits, head placed at 34 mm (error, mm)")
    print(f"{'method':<12}{'crown med/worst':>18}{'chin med/worst':>18}{'head within 1 mm':>20}")
    for method, e in errors.items():
        if not e["chin"]:
            print(f"{method:<12} not measured (not installed or nothing found)")
            continue

        def medworst(v: list[float]) -> str:
            v = [abs(x) for x in v if x == x]
            if not v:
                return "-"
            return f"{statistics.median(v):.2f} / {max(v):.2f}"

        heads = [abs(x) for x in e["head"] if x == x]
        within = sum(h <= 1.0 for h in heads)
        share = f"{within}/{len(heads)} = {within / len(heads):.0%}" if heads else "-"
        print(f"{method:<12}{medworst(e['crown']):>18}{medworst(e['chin']):>18}{share:>20}")
    print("  target: head height within 1 mm for >= 90 % of portraits")

    others = [a for a in annotations() if a.chin_y is not None]
    found = {"landmarks": 0, "haar": 0, "dlib": 0}
    total = 0
    for a, frame in zip(whole, frames, strict=True):
        _, scale = portrait_frame(a)
        own = eye_to_chin(a) * scale
        for b in others:
            if person(b.name) == person(a.name):
                continue
            for where in ("side", "edge"):
                for share in (0.35, 0.4, 0.7):
                    composed = with_second_person(frame, b, own * share, where)
                    total += 1
                    rgb = cv2.cvtColor(composed, cv2.COLOR_BGR2RGB)
                    found["landmarks"] += len(analyzer.find_faces(rgb)) >= 2
                    gray = cv2.cvtColor(composed, cv2.COLOR_BGR2GRAY)
                    found["haar"] += len(haar.find_faces(gray)) >= 2
                    if dlib_run is not None:
                        found["dlib"] += dlib_run(composed)[0] >= 2
    print(f"\nSecond person in view, {total} compositions (beside / cut by the edge; eye to")
    print("chin 0.35, 0.4 and 0.7 of the applicant's): refused")
    for method, n in found.items():
        if method == "dlib" and dlib_run is None:
            continue
        print(f"  {method:<10} {n}/{total} = {n / total:.1%}  (target: 100 %)")

    def rate(step: Callable[[np.ndarray], object]) -> float:
        for frame in frames[:2]:
            step(frame)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(frames[count % len(frames)])
            count += 1
        return count / (time.perf_counter() - start)

    previous: list[tuple[float, float] | None] = [None]

    def full(frame: np.ndarray) -> None:
        previous[0] = analyzer.analyse(frame, previous[0]).face_centre

    def haar_only(frame: np.ndarray) -> None:
        boxes = haar.find_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        if boxes:
            haar.crown_and_chin(boxes[0])

    print("\nFrames per second at 1280x720, one core (the real portrait frames in turn)")
    new = rate(full)
    old = rate(haar_only)
    print(
        f"  landmarks, all 16 checks: {new:.1f} frames/s = {new / 20:.2f} x the 20 frames/s target"
    )
    print(f"  haar face boxes + ratios (detection only, no checks): {old:.1f} frames/s")
    if dlib_run is not None:
        d = rate(lambda f: dlib_run(f))
        print(f"  dlib HOG + 68 landmarks (detection and landmarks only): {d:.1f} frames/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--photo-only", action="store_true")
    args = parser.parse_args()
    one_core()
    if args.photo_only:
        photo_bench(args.seconds)
        return

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

    photo_bench(args.seconds)


if __name__ == "__main__":
    main()
