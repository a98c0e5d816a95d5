"""preprocess: any digit picture -> MNIST format, or a clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from viz import PreprocessError, preprocess


def _seven(size: int = 200, ink: int = 255, paper: int = 0, mode: str = "L") -> Image.Image:
    """A thick '7' drawn off-centre on a large canvas."""
    img = Image.new(mode, (size, size), paper if mode == "L" else (paper,) * len(mode))
    d = ImageDraw.Draw(img)
    colour = ink if mode == "L" else (ink,) * len(mode)
    d.line([(40, 30), (120, 30), (70, 160)], fill=colour, width=14)
    return img


def _check_mnist_like(t: torch.Tensor) -> None:
    assert t.shape == (1, 28, 28) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) == pytest.approx(1.0, abs=0.02)
    rows = (t[0] > 0.05).any(1).nonzero().flatten()
    cols = (t[0] > 0.05).any(0).nonzero().flatten()
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) in (19, 20, 21)  # 20x20 box
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = float((ys * t[0]).sum() / t.sum()), float((xs * t[0]).sum() / t.sum())
    assert abs(cy - 13.5) <= 1.0 and abs(cx - 13.5) <= 1.0  # centred by centre of mass
    assert float(t[0, :, :3].sum() + t[0, :, -3:].sum()) < 1.0  # dark border


def test_light_on_dark_and_dark_on_light_agree():
    a = preprocess(_seven(ink=255, paper=0))
    b = preprocess(_seven(ink=0, paper=255))
    _check_mnist_like(a)
    assert torch.allclose(a, b, atol=0.02)


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "P", "LA", "I;16", "1"])
def test_pil_modes(mode):
    ref = preprocess(_seven())
    base = _seven(ink=0, paper=255)
    if mode == "I;16":
        arr = (np.asarray(base, dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    out = preprocess(img)
    _check_mnist_like(out)
    assert float((out - ref).abs().mean()) < 0.03


def test_transparent_canvas_drawing():
    # A drawing canvas: transparent background, opaque black strokes (RGBA).
    rgba = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(40, 30), (120, 30), (70, 160)], fill=(0, 0, 0, 255), width=14)
    out = preprocess(rgba)
    _check_mnist_like(out)
    assert torch.allclose(out, preprocess(_seven(280)), atol=0.05)
    # ... and light strokes on a transparent background give the same digit
    light = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(light).line([(40, 30), (120, 30), (70, 160)], fill=(255, 255, 255, 255), width=14)
    assert torch.allclose(preprocess(light), out, atol=0.02)


def test_animated_gif_uses_first_frame():
    frames = [_seven(), Image.new("L", (200, 200), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    buf.seek(0)
    img = Image.open(buf)
    assert img.n_frames == 2
    _check_mnist_like(preprocess(img))


def test_arrays_and_tensors():
    arr = np.asarray(_seven())
    ref = preprocess(arr)
    _check_mnist_like(ref)
    assert torch.allclose(preprocess(arr.astype(np.float32) / 255.0), ref, atol=1e-6)
    assert torch.allclose(preprocess(arr > 127), ref, atol=0.1)
    assert torch.allclose(preprocess(torch.from_numpy(arr.copy()).unsqueeze(0)), ref, atol=1e-6)
    rgb = np.repeat(arr[..., None], 3, axis=2)
    assert torch.allclose(preprocess(rgb), ref, atol=1e-3)


def test_an_mnist_digit_stays_an_mnist_digit():
    digit = torch.zeros(28, 28)
    digit[4:24, 12:16] = 1.0  # a '1' already in MNIST format
    out = preprocess(digit.numpy())
    assert torch.allclose(out[0], digit, atol=0.05)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((28, 28), dtype=np.uint8), "empty"),
        (np.full((50, 50, 3), 200, dtype=np.uint8), "empty"),
        (Image.new("RGBA", (100, 100), (0, 0, 0, 0)), "empty"),
        (np.zeros((28, 28), dtype=np.complex64), "unsupported pixel type"),
        (np.zeros((2, 28, 28, 3)), "too small or not 2-D|must be"),
        (np.zeros((28, 28, 5)), "must be"),
        (np.zeros(10), "too small or not 2-D"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), -1.0), "negative"),
        ("digit.png", "expected a PIL image"),
    ],
)
def test_rejects_what_is_not_a_digit_image(bad, message):
    with pytest.raises(PreprocessError, match=message):
        preprocess(bad)


def test_huge_and_truncated_images_get_clear_errors():
    import io

    import numpy as np
    from PIL import Image

    from viz.preprocess import MAX_PIXELS, PreprocessError, preprocess

    with pytest.raises(PreprocessError, match="too large"):
        preprocess(np.zeros((5000, 4000), dtype=np.uint8))  # 20 megapixels, refused before any work
    assert 5000 * 4000 > MAX_PIXELS
    buf = io.BytesIO()
    Image.new("L", (200, 200), 255).save(buf, format="PNG")
    cut = Image.open(io.BytesIO(buf.getvalue()[:120]))  # PIL opens lazily; decoding fails later
    with pytest.raises(PreprocessError, match="truncated or corrupt"):
        preprocess(cut)


def test_preprocess_scene_keeps_sizes_and_places():
    import torch

    from viz.preprocess import preprocess_scene

    img = torch.zeros(128, 256)  # wide: letterboxed into 64x64, scale 1/4
    img[20:100, 20:40] = 1.0  # tall bar, 80 px -> 20 px
    img[100:120, 200:210] = 1.0  # small bar, 20 px -> 5 px
    scene = preprocess_scene(img)
    assert scene.shape == (1, 64, 64) and float(scene.max()) == 1.0
    rows = (scene[0] > 0.5).any(1).nonzero().flatten()
    assert rows.min() >= 16 and rows.max() < 48  # 128 px tall -> 32 px band in the middle
    tall = (scene[0, :, 5:10] > 0.5).any(1).sum()
    small = (scene[0, :, 50:53] > 0.5).any(1).sum()
    assert abs(int(tall) - 20) <= 1 and abs(int(small) - 5) <= 1


def paper_photo(strokes: np.ndarray, seed: int = 0) -> np.ndarray:
    """``strokes`` (H, W) in [0, 1] photographed on paper: dark ink, light paper lit unevenly
    (a gradient of 0.33 across) with a blurred texture, like a phone photo of a written digit."""
    from PIL import ImageFilter

    h, w = strokes.shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    noise = Image.fromarray((rng.normal(0.5, 0.2, (h, w)) * 255).clip(0, 255).astype(np.uint8))
    texture = np.asarray(noise.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64) / 255 - 0.5
    paper = 0.62 + 0.25 * xx / w + 0.08 * yy / h + 0.15 * texture
    return np.clip(paper * (1 - 0.75 * strokes), 0, 1)


def _photo_of_seven() -> tuple[np.ndarray, np.ndarray]:
    strokes = np.asarray(_seven(size=240), dtype=np.float64) / 255
    strokes = np.pad(strokes, ((40, 40), (80, 80)))  # 320x400, the seven in the middle
    return strokes, paper_photo(strokes)


def test_a_photo_on_uneven_paper_is_cleaned_to_a_digit_on_black(monkeypatch):
    from viz.preprocess import ink_notes, to_ink

    strokes, photo = _photo_of_seven()
    from PIL import ImageFilter

    near = Image.fromarray((strokes > 0).astype(np.uint8)).filter(ImageFilter.MaxFilter(31))
    far = np.asarray(near) == 0  # paper at least 15 px from any stroke
    ink = to_ink(photo)
    assert ink[far].mean() < 0.01 and ink[far].max() < 0.1  # the paper is gone
    assert ink[strokes > 0.9].mean() > 0.6  # the strokes are kept
    assert ink_notes(photo) == [
        "Dark strokes on a light background: inverted to white on black, as MNIST.",
        "Uneven paper (shading or texture): its brightness was estimated and removed before scaling.",
    ]
    _check_mnist_like(preprocess(photo))
    # without the cleaning (a threshold no paper reaches), the shading stays as a grey box
    import importlib

    monkeypatch.setattr(importlib.import_module("viz.preprocess"), "UNEVEN_PAPER", 10.0)
    old = to_ink(photo)[far]
    assert old.max() > 0.2 and old.mean() > 0.03


def test_notes_say_only_what_was_done():
    from viz.preprocess import ink_notes

    white_on_black = np.asarray(_seven(), dtype=np.float64) / 255
    assert ink_notes(white_on_black) == []
    assert ink_notes(1 - white_on_black) == [
        "Dark strokes on a light background: inverted to white on black, as MNIST."
    ]
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(10, 10), (50, 50)], fill=(0, 0, 0, 255), width=6)
    assert ink_notes(rgba) == []  # a drawing on transparency: nothing inverted or cleaned
    assert ink_notes(np.zeros((2, 2))) == []  # unusable: to_ink itself says why
