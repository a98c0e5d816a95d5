"""python -m viz.export: every figure from shipped checkpoints, valid files, clear errors."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image, ImageDraw

import viz
from viz import export


@pytest.mark.slow
def test_all_figures_png_are_valid_images(tmp_path, capsys):
    assert export.main(["--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("models run on CPU")  # the device, said first
    assert [line.split("]")[0][1:] for line in lines[1:-1]] == list(export.FIGURES)  # a progress line per figure
    expected_width = {"receptive_field": 3, "levels": 3, "offset_field": 3, "adaptation": 4, "modulation": 3}
    for name, ncols in expected_width.items():
        with Image.open(tmp_path / f"{name}.png") as img:
            img.verify()
        with Image.open(tmp_path / f"{name}.png") as img:
            assert img.format == "PNG"
            assert img.width == pytest.approx(3.2 * ncols * 110, abs=2)
            assert img.height > 300
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


@pytest.mark.slow
def test_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert export.main(["--out", str(a), "--figure", "levels", "--figure", "receptive_field"]) == 0
    assert export.main(["--out", str(b), "--figure", "levels", "--figure", "receptive_field"]) == 0
    for name in ("levels.png", "receptive_field.png"):
        assert hashlib.sha256((a / name).read_bytes()).digest() == hashlib.sha256((b / name).read_bytes()).digest()


@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("html", b"<html")])
def test_svg_and_html(tmp_path, fmt, magic):
    assert export.main(["--out", str(tmp_path), "--format", fmt, "--figure", "receptive_field"]) == 0
    data = (tmp_path / f"receptive_field.{fmt}").read_bytes()
    assert magic in data[:200].lower()
    if fmt == "html":
        assert b"plotly" in data.lower() and b"Where three stacked 3x3 layers sample" in data


def test_image_file_digit(tmp_path):
    img = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(img).line([(30, 20), (90, 20), (50, 100)], fill=0, width=10)
    path = tmp_path / "seven.png"
    img.save(path)
    assert export.main(["--out", str(tmp_path / "o"), "--digits", str(path), "3", "--figure", "levels"]) == 0
    assert (tmp_path / "o" / f"digit_{str(path).replace('/', '_')}" / "levels.png").exists()
    assert (tmp_path / "o" / "digit_3" / "levels.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "nope"], "no checkpoint file or shipped checkpoint named 'nope'"),
        (["--digits", "100"], "digit index 100 out of range"),
        (["--digits", "missing.png"], "neither a sample index"),
    ],
)
def test_clear_errors(tmp_path, capsys, args, message):
    assert export.main(["--out", str(tmp_path), *args]) == 1
    assert message in capsys.readouterr().err


def test_unreadable_image_file(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert export.main(["--out", str(tmp_path), "--digits", str(bad)]) == 1
    assert "cannot read image" in capsys.readouterr().err


@pytest.mark.slow
def test_user_model_figures(tmp_path, capsys):
    from PIL import Image, ImageDraw

    img = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(img).line([(15, 15), (65, 15), (35, 70)], fill=0, width=8)
    img.save(tmp_path / "seven.png")
    args = ["--model", "examples.dcn_resnet:dcn_resnet", "--weights", "examples/dcn_resnet_digits.pt"]
    assert (
        export.main([*args, "--image", str(tmp_path / "seven.png"), "--unit", "3", "9", "--out", str(tmp_path / "a")])
        == 0
    )
    out = capsys.readouterr().out
    assert "stage2.0.conv2" in out and "unit (i, j) at (2 i + 0, 2 j + 0)" in out
    for name in ("model_points", "levels", "offset_field"):
        with Image.open(tmp_path / "a" / f"{name}.png") as im:
            assert im.size[0] > 300
    assert not (tmp_path / "a" / "modulation.png").exists()  # DCNv1: nothing to show
    assert "unit (3, 9)" in out
    assert export.main([*args, "--digits", "0", "5", "--figure", "levels", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "image_1" / "levels.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "tests.user_models:not_stacked"], "are not stacked"),
        (["--model", "examples.dcn_resnet:dcn_resnet", "--unit", "20", "0"], "outside the top layer's (14, 14) map"),
        (["--model", "examples.dcn_resnet:dcn_resnet", "--weights", "nope.pt"], "no weights file"),
        (["--model", "examples.dcn_resnet:dcn_resnet", "--pixel-stride", "2", "2"], "go together"),
        (["--model", "examples.dcn_resnet:dcn_resnet", "--image", "7"], "a bundled sample digit is --digits 7"),
        (["--model", "tests.user_models:six_layers", "--from-layer", "7"], "--from-layer must be between 1 and 6"),
    ],
)
def test_user_model_errors(tmp_path, capsys, args, message):
    assert export.main([*args, "--out", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_a_deep_models_bottom_layers_are_exported_from_a_window(tmp_path, capsys):
    from viz.export import user_builders
    from viz.samples import load_samples

    args = ["--model", "tests.user_models:six_layers", "--figure", "levels", "--figure", "model_points", "--digits", "1"]
    assert export.main([*args, "--from-layer", "5", "--out", str(tmp_path)]) == 0
    assert "back-projecting from stacked layer 5 of 6 (1 = bottom)" in capsys.readouterr().out
    assert (tmp_path / "levels.png").exists() and (tmp_path / "model_points.png").exists()
    # what that figure holds: 5 levels, the deepest the model's bottom layer
    model = viz.load_user_model("tests.user_models:six_layers")
    cap = viz.capture(model, viz.prepare_for(model, load_samples().images[1, 0].numpy())).up_to(4)
    spec = user_builders(cap, (7, 7))["levels"]()
    assert len(spec.panels) == 5 and "level 5: the bottom layer's 9 samples" in spec.caption
