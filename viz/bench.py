"""Benchmark of the viz core on a shipped checkpoint (or a fresh model if none is shipped).

    python -m viz.bench [--checkpoint deform_rts] [--repeats 20] [--device auto|cpu|cuda]
    python -m viz.bench --model examples.dcn_backbones:dcn_resnet18 --input-size 224 --in-channels 3

Prints min / median / max times of capture + back-projection of one unit's 729 points (one
digit) and of all top-layer units, for each method; then the app's server-side work for a new
digit and for a new 64x64 scene.

With ``--model`` (a model of yours, as the app and export take it): discovery (its time and how
many images went through the model, forward and backward), then for the centre unit of a photo
capture + the deepest level's points, and each of the unit views as the app computes them.
Goals (issue: a real backbone): discovery <= 20 passes; capture + points < 200 ms at 224;
ERF and effective sampling locations < 1 s; saliency region < 3 s.
"""

from __future__ import annotations

import argparse
import io
import sys

import torch
from PIL import Image, ImageDraw

import viz
from models.runtime import add_device_argument, describe_device, device_or_exit, spread, time_runs, use_all_cpu_threads
from viz.user_model import add_model_arguments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m viz.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", default="deform_rts", help="shipped digit checkpoint name or path")
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions")
    add_device_argument(p)
    add_model_arguments(p)
    args = p.parse_args(argv)
    threads = use_all_cpu_threads()
    device = device_or_exit(args.device)
    if args.model:
        return user_model_bench(args, device, threads)
    try:
        model = viz.load(args.checkpoint, device)
    except viz.CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    image = torch.rand(1, 1, 28, 28)
    print(
        f"{args.checkpoint}, on {describe_device(device, threads)}; times in ms as min / median / max of {args.repeats} runs"
    )
    print(f"  capture alone: {spread(time_runs(lambda: viz.capture(model, image), args.repeats))}")
    for method in viz.METHODS:
        one = time_runs(
            lambda m=method, model=model: viz.backproject(viz.capture(model, image), (7, 7), method=m), args.repeats
        )
        reps = max(3, args.repeats // 4)
        every = time_runs(
            lambda m=method, model=model: viz.backproject(viz.capture(model, image), "all", method=m), reps
        )
        print(
            f"  {method:<8} capture + one unit (729 samples): {spread(one)}   capture + all 196 units: {spread(every)}"
        )
    grouped_points(args.repeats, device)
    support_views(args.repeats, device)
    app_update(args.repeats, device)
    scene_update(args.repeats, device)
    return 0


def user_model_bench(args: argparse.Namespace, device: torch.device, threads: int) -> int:
    """Discovery, capture + deepest points and every unit view of a model of yours."""
    import time

    from models.discovery import DiscoveryError
    from models.discovery.probe import PROBE_LOG
    from viz.samples import sample_photo
    from viz.user_model import model_from_args
    from viz.views import REGISTRY

    passes = []
    t0 = time.perf_counter()
    try:
        model = model_from_args(args)
    except (DiscoveryError, viz.CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    assert model is not None
    h, w = model.input_size
    # find_layers: one forward of one example; the probe: what PROBE_LOG says
    passes = [(1, (h, w), "finding layers, forward only")] + list(PROBE_LOG)
    at_size = sum(n * (size[0] * size[1]) / (h * w) for n, size, _ in passes)
    print(f"{args.model} at {h}x{w}, on {describe_device(device, threads)}")
    print(
        f"  discovery: {seconds:.1f} s, {len(model.sampling_layers())} stacked layers; images through the model: "
        + ", ".join(f"{n} at {s[0]}x{s[1]} ({how})" for n, s, how in passes)
        + f" = {at_size:.0f} passes at the input size (goal <= 20)"
    )
    photo = viz.prepare_for(model, sample_photo("chelsea")) if model.in_channels == 3 else torch.rand(1, h, w)
    cap = viz.capture(model, photo)
    unit = (cap.top.out_size[0] // 2, cap.top.out_size[1] // 2)
    levels = len(model.sampling_layers())  # back-projected as deep as viz.POINT_BUDGET allows
    reps = max(3, args.repeats // 4)
    pts = viz.backproject(cap, unit)
    t = time_runs(lambda: viz.backproject(viz.capture(model, photo), unit), reps)
    print(
        f"  capture + level-{pts.levels} points of unit {unit} ({pts.count(level=pts.levels)} samples at that level, of "
        f"{levels} stacked layers): {spread(t)} ms (goal < 200 ms)"
    )
    for view in REGISTRY.values():
        if view.draws_points:
            continue
        t = time_runs(lambda v=view: v.compute(model, viz.capture(model, photo), unit), max(2, reps // 2))
        print(f"  {view.name}: {spread(t)} ms")
    return 0


def grouped_points(repeats: int, device: torch.device | str = "cpu") -> None:
    """The 4-group scene models (the shipped ``scene_dcnv3`` and ``scene_dcnv4``, or untrained
    ones with moved offsets where they are not shipped): capture + level-3 points of one unit, all
    groups merged (36^3 = 46,656 samples) and one group at the top. Goal: under 50 ms, all groups
    merged."""
    from models.nets.scenes import SceneNet

    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    for arch in ("dcnv3", "dcnv4"):
        name = f"scene_{arch}"
        if name in viz.shipped_checkpoints():
            model, what = viz.load(name, device), name
        else:
            torch.manual_seed(0)
            model, what = SceneNet(arch).eval(), f"an untrained 4-group {arch.upper()} scene model"
            for pname, param in model.named_parameters():
                if any(part in ("offset", "mask", "offset_mask") for part in pname.split(".")[:-1]):
                    torch.nn.init.normal_(param, std=0.05)
            model.to(device)
        print(f"grouped layers ({what}; one unit, level 3):")
        for method in viz.METHODS:
            merged = time_runs(
                lambda m=method, model=model: viz.backproject(viz.capture(model, image), (8, 8), method=m), repeats
            )
            one = time_runs(
                lambda m=method, model=model: viz.backproject(viz.capture(model, image), (8, 8), method=m, group=0),
                repeats,
            )
            print(
                f"  {method:<8} capture + all groups: {spread(merged)} ms   capture + group 0 at the top: {spread(one)} ms"
            )


def support_views(repeats: int, device: torch.device | str = "cpu") -> None:
    """DCNv2's views of one unit (``viz.support``): targets 50 ms (digit) / 150 ms (scene) for
    ERF + effective sampling locations, 300 ms for the saliency region."""
    from viz.samples import load_samples, load_scene_samples
    from viz.support import point_attributions, saliency_region, unit_support

    print("what a unit really uses (one unit; ERF + effective sampling locations from the image; saliency region):")
    for name, image, unit in (
        ("deform_rts", load_samples().images[1], (7, 7)),
        ("scene_deform", load_scene_samples().images[10], (6, 10)),
    ):
        model = viz.load(name, device)

        def erf_esl(model=model, image=image, unit=unit) -> None:
            cap = viz.capture(model, image)
            sup = unit_support(model, image, unit)
            point_attributions(viz.backproject(cap, unit), sup, cap)

        region = time_runs(lambda model=model, image=image, unit=unit: saliency_region(model, image, unit), repeats)
        print(f"  {name}: ERF + ESL {spread(time_runs(erf_esl, repeats))} ms   saliency region {spread(region)} ms")


def _canvas_png(draw_fn, side: int) -> Image.Image:
    """A canvas-like RGBA drawing round-tripped through PNG bytes, as the browser sends it."""
    img = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    draw_fn(ImageDraw.Draw(img))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()

    def decode() -> Image.Image:
        out = Image.open(io.BytesIO(data))
        out.load()
        return out

    return decode


def app_update(repeats: int, device: torch.device | str = "cpu") -> None:
    """What the app's digit page does server-side when the canvas changes: decode the PNG,
    preprocess, run both models, build every tab's spec with the page's own functions
    (``viz.pages``), draw it with Plotly and serialise it as Streamlit does."""
    from viz.figures import split_panels
    from viz.pages import DIGIT_TABS, analyse, digit_tab, unit_frame, unit_view
    from viz.render import plotly_figure, plotly_json
    from viz.stats import centre_unit
    from viz.views import VIEWS

    try:
        deform, regular = viz.load("deform_rts", device), viz.load("regular_rts", device)
    except viz.CheckpointError as exc:
        print(f"app update: skipped ({exc})")
        return
    decode = _canvas_png(lambda d: d.line([(60, 50), (200, 50), (110, 240)], fill=(255, 255, 255, 255), width=22), 280)

    def update(points_only: bool = False) -> None:
        pair = analyse(deform, regular, viz.preprocess(decode()), "deform_rts")
        unit = centre_unit(pair.deform)
        frame = unit_frame(pair, 3)  # the page's axes for every unit of this digit
        specs = [
            unit_view(pair, (deform, regular), ("deformable", "regular twin"), unit, VIEWS[0], frame=frame).spec,
            digit_tab(pair, "probabilities", unit),
        ]
        if not points_only:
            specs += [digit_tab(pair, tab, unit) for tab in DIGIT_TABS]
        for spec in specs:
            for part in split_panels(spec):  # a chart a panel, as the page draws them
                plotly_json(plotly_figure(part, interactive=True))

    print("app, digit page, new canvas state -> all figures serialised (server side):")
    print(
        f"  every tab: {spread(time_runs(update, repeats))} ms   "
        f"sampling-points tab only: {spread(time_runs(lambda: update(True), repeats))} ms"
    )


def scene_update(repeats: int, device: torch.device | str = "cpu") -> None:
    """The scene page's server-side work for a new drawing: decode the 256x256 canvas PNG, make
    the 64x64 scene, find its digits, run the scene model and its twin, build the points view,
    the caption, the per-digit table and the triplet with the page's own functions
    (``viz.pages``) and serialise the figures as Streamlit does."""
    from viz.figures import split_panels
    from viz.pages import analyse, scene_glance, scene_picks, scene_reads, scene_unit_words, unit_frame, unit_view
    from viz.preprocess import preprocess_scene
    from viz.render import plotly_figure, plotly_json
    from viz.scene_stats import ink_boxes
    from viz.views import VIEWS

    try:
        deform, regular = viz.load("scene_deform", device), viz.load("scene_regular", device)
    except viz.CheckpointError as exc:
        print(f"app, scene page: skipped ({exc})")
        return

    def two_digits(d) -> None:
        d.line([(30, 30), (150, 30), (80, 220)], fill=(255, 255, 255, 255), width=12)
        d.line([(190, 160), (230, 160), (205, 215)], fill=(255, 255, 255, 255), width=8)

    decode = _canvas_png(two_digits, 256)

    def update() -> None:
        scene = preprocess_scene(decode())
        boxes = ink_boxes(scene)
        pair = analyse(deform, regular, scene, "scene_deform", "scene_regular")
        picks = scene_picks(pair, boxes)
        unit = picks["large"] or (8, 8)
        frame = unit_frame(pair, 3)  # the page's axes for every unit of this scene
        names = ("scene_deform", "scene_regular (twin)")
        shown = unit_view(pair, (deform, regular), names, unit, VIEWS[0], levels=3, frame=frame)
        scene_unit_words(pair, shown, boxes, unit, "bilinear", 3, None)
        scene_reads(pair, boxes, [None] * len(boxes))
        for spec in (shown.spec, scene_glance(pair, picks)):
            for part in split_panels(spec):  # a chart a panel, as the page draws them
                plotly_json(plotly_figure(part, interactive=True))

    print("app, scene page, new 64x64 drawing -> both models, points view and triplet serialised (server side):")
    print(f"  {spread(time_runs(update, repeats))} ms")


if __name__ == "__main__":
    raise SystemExit(main())
