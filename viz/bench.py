"""Benchmark of the viz core on a shipped checkpoint (or a fresh model if none is shipped).

    python -m viz.bench [--checkpoint deform_plain] [--repeats 20]

Prints the time of capture + back-projection of one unit's 729 points (one digit) and of all
top-layer units, for each method.
"""

from __future__ import annotations

import argparse

import torch

import viz
from models import build_model
from models.runtime import time_runs, use_all_cpu_threads


def best_ms(fn, repeats: int) -> float:
    return 1e3 * min(time_runs(fn, repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m viz.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", default="deform_plain", help="shipped checkpoint name or path")
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions (best is reported)")
    args = p.parse_args(argv)
    threads = use_all_cpu_threads()
    try:
        model = viz.load(args.checkpoint)
        source = args.checkpoint
    except viz.CheckpointError as exc:
        print(f"note: {exc}; timing a fresh deform model instead")
        model, source = build_model("deform").eval(), "fresh deform model"
    torch.manual_seed(0)
    image = torch.rand(1, 1, 28, 28)
    print(f"{source}, {threads} threads, best of {args.repeats}")
    print(f"  capture alone: {best_ms(lambda: viz.capture(model, image), args.repeats):.1f} ms")
    for method in viz.METHODS:
        one = best_ms(lambda m=method: viz.backproject(viz.capture(model, image), (7, 7), method=m), args.repeats)
        reps = max(3, args.repeats // 4)
        every = best_ms(lambda m=method: viz.backproject(viz.capture(model, image), "all", method=m), reps)
        print(
            f"  {method:<8} capture + one unit (729 samples): {one:6.1f} ms   capture + all 196 units: {every:7.1f} ms"
        )
    app_update(args.repeats)
    return 0


def app_update(repeats: int) -> None:
    """What the app does server-side when the canvas changes: decode the PNG, preprocess, run
    both models, build every figure on the page and serialise them as Streamlit does."""
    import base64
    import io

    import plotly.io as pio
    from PIL import Image, ImageDraw

    from viz import interactive as ia

    try:
        deform, regular = viz.load("deform_rts"), viz.load("regular_rts")
    except viz.CheckpointError as exc:
        print(f"app update: skipped ({exc})")
        return
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(60, 50), (200, 50), (110, 240)], fill=(255, 255, 255, 255), width=22)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    def update(points_only: bool = False) -> None:
        a = ia.analyse(deform, regular, ia.prepare(ia.canvas_image(url)))
        figs = [ia.points_figure(a, ia.default_unit(a), 3, "bilinear", False), ia.probabilities_figure(a)]
        if not points_only:
            figs += [ia.offsets_figure(deform, a), ia.density_figure(a, "all", "bilinear"), ia.dilation_view(a)[0]]
        for f in figs:
            pio.to_json(f)

    print("app, new canvas state -> all figures serialised (server side):")
    print(
        f"  every tab: {best_ms(update, repeats):6.1f} ms   sampling-points tab only: {best_ms(lambda: update(True), repeats):6.1f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
