"""Turn any digit image into the MNIST format the models expect.

MNIST's own recipe: grey, white digit on black, the digit's bounding box scaled (keeping its
aspect ratio, anti-aliased) to fit a 20x20 box, then placed in a 28x28 field so that its centre
of mass sits at the centre.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

#: Ink below this fraction of the strongest ink is treated as background when cropping.
CROP_THRESHOLD = 0.1
#: An image whose ink contrast is below this (on a 0..1 scale) holds no digit.
MIN_CONTRAST = 0.08


class PreprocessError(ValueError):
    """The input is not a usable digit image; the message says why."""


def _pil_to_array(img: Image.Image) -> np.ndarray:
    """Greyscale-or-RGBA float array in [0, 1], shape (H, W) or (H, W, C)."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated: the first frame
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.float64) / 65535.0
    if mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return arr / top
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return arr / 255.0 if arr.max(initial=0) > 1.0 else arr
    if mode == "P":
        img = img.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
        img = img.convert("RGB" if mode != "1" else "L")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA")
    return np.asarray(img, dtype=np.float64) / 255.0


def _array_to_float(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min(initial=0) < 0:
            raise PreprocessError("integer image has negative values")
        top = 255.0 if arr.max(initial=0) <= 255 else float(info.max)
        return arr.astype(np.float64) / top
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise PreprocessError("image has NaN or infinite values")
        if out.min(initial=0) < 0:
            raise PreprocessError("float image has negative values; expected [0, 1] or [0, 255]")
        return out / 255.0 if out.max(initial=0) > 1.0 else out
    raise PreprocessError(f"unsupported pixel type {arr.dtype}; expected integers, floats or booleans")


def _ink(arr: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Ink strength in [0, 1] (digit bright), from grey / RGB / with alpha, and notes on what
    was done beyond reading it (see :func:`_ink_on_paper`)."""
    grey, alpha = _grey_alpha(arr)
    if alpha is not None and alpha.min() < 0.99:
        # Transparency carries the drawing (a canvas, a cut-out digit): ink = opacity times
        # the stroke's contrast against the opposite polarity; fully transparent = background.
        opaque = alpha > 0.5
        if opaque.any() and grey[opaque].mean() > 0.5:
            return alpha * grey, []  # light strokes
        return alpha * (1.0 - grey), []  # dark strokes
    return _ink_on_paper(grey)


def _grey_alpha(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels ``(H, W)`` and the alpha channel (or None) of a picture array."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        grey, alpha = arr, None
    elif arr.ndim == 3 and arr.shape[2] in (2, 4):
        colour, alpha = arr[..., :-1], arr[..., -1]
        grey = colour.mean(axis=2) if colour.shape[2] == 3 else colour[..., 0]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        grey, alpha = arr @ np.array([0.299, 0.587, 0.114]), None
    else:
        raise PreprocessError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    return grey, alpha


#: Paper whose brightness varies more than this (std on 0..1, away from the strokes) is
#: cleaned: its own brightness is estimated and removed before thresholding.
UNEVEN_PAPER = 0.03


def _ink_on_paper(grey: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Ink ``(H, W)`` (not yet scaled to its peak) of a grey picture without transparency, and
    notes on what was done. Polarity comes from the border; an uneven background (a photo of
    paper: shading, texture) is removed locally and its remaining noise thresholded, so the
    digit does not sit in a grey box."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    light_paper = background >= 0.5
    signed = grey if light_paper else 1.0 - grey  # the paper bright, the ink dark
    ink = np.clip((background if light_paper else 1.0 - background) - signed, 0.0, None)
    notes = ["Dark strokes on a light background: inverted to white on black, as MNIST."] if light_paper else []
    peak = float(ink.max())
    paper = ink < 0.5 * peak if peak > 0 else np.ones_like(ink, dtype=bool)
    if peak < MIN_CONTRAST or float(signed[paper].std()) <= UNEVEN_PAPER:
        return ink, notes
    # The paper's own brightness: a high percentile per coarse cell (cells wider than a stroke,
    # so most of each cell is paper), smoothed over neighbouring cells and brought back to size.
    h, w = signed.shape
    cell = max(2, round(max(h, w) / 16))
    gh, gw = -(-h // cell), -(-w // cell)
    padded = np.pad(signed, ((0, gh * cell - h), (0, gw * cell - w)), mode="edge")
    cells = np.percentile(padded.reshape(gh, cell, gw, cell).transpose(0, 2, 1, 3).reshape(gh, gw, -1), 90, axis=2)
    cells = np.pad(cells, 1, mode="edge")
    cells = np.max([cells[i : i + gh, j : j + gw] for i in range(3) for j in range(3)], axis=0)  # ink-free
    paper_level = np.asarray(
        Image.fromarray(cells.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    ink = np.clip(paper_level - signed, 0.0, None)
    # What is left of the texture is small and everywhere: subtract a noise floor read from the
    # paper (median plus a few robust deviations), keeping strokes' shading above it.
    rest = ink[ink < 0.5 * float(ink.max())]
    floor = float(np.median(rest) + 4.0 * 1.4826 * np.median(np.abs(rest - np.median(rest)))) if rest.size else 0.0
    ink = np.clip(ink - floor, 0.0, None)
    notes.append("Uneven paper (shading or texture): its brightness was estimated and removed before scaling.")
    return ink, notes


def ink_notes(image: Image.Image | np.ndarray | Tensor) -> list[str]:
    """What :func:`to_ink` does to this picture beyond reading it, in words for the user (an
    inversion, a cleaned background); empty for a clean white-on-black digit or a drawing."""
    notes: list[str] = []
    try:
        to_ink(image, notes)
    except PreprocessError:
        return []  # to_ink says what is wrong
    return notes


#: Images with more pixels than this are refused (the app's upload guard uses the same limit).
MAX_PIXELS = 16_000_000
#: Side of the scene canvas the scene models were trained on.
SCENE_SIZE = 64


def _as_array(image: Image.Image | np.ndarray | Tensor) -> np.ndarray:
    """Any accepted picture -> float array in [0, 1], ``(H, W)`` or ``(H, W, C)``, checked."""
    if isinstance(image, Image.Image):
        w, h = image.size
        if w * h > MAX_PIXELS:
            raise PreprocessError(f"image of {w}x{h} pixels is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels)")
        try:
            image = ImageOps.exif_transpose(image)  # phone photos: the orientation the camera meant
            arr = _pil_to_array(image)
        except (OSError, SyntaxError) as exc:  # PIL decodes lazily: truncated files fail here
            raise PreprocessError(f"the image could not be decoded ({exc}); it may be truncated or corrupt") from None
    elif isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        arr = _array_to_float(t.numpy())
    elif isinstance(image, np.ndarray):
        arr = _array_to_float(image)
    else:
        raise PreprocessError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 4:
        raise PreprocessError(f"image of shape {arr.shape} is too small or not 2-D (need at least 4x4 pixels)")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise PreprocessError(f"image of shape {arr.shape[:2]} is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels)")
    return arr


def to_ink(image: Image.Image | np.ndarray | Tensor, notes: list[str] | None = None) -> np.ndarray:
    """Any picture -> ink strength ``(H, W)`` float64 in [0, 1], 1 = strongest ink.

    Accepts a PIL image (any mode: grey, RGB, RGBA/transparent, palette, CMYK, 16-bit; the first
    frame of an animation; EXIF orientation applied), a numpy array ``(H, W)``,
    ``(H, W, 1|3|4)`` of integers, floats ([0, 1] or [0, 255]) or booleans, or a torch tensor of
    the same layouts (or ``(C, H, W)``). Dark-on-light and light-on-dark are both handled
    (polarity is read from the border), and so is a drawing on a transparent background.
    ``notes``: a list that gets what was done beyond reading the picture, in words for the user
    (an inversion, a cleaned paper background).

    Raises:
        PreprocessError: empty, blank or huge image, unsupported type, shape or values.
    """
    ink, said = _ink(_as_array(image))
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise PreprocessError("the image is empty: no digit found (blank canvas or uniform image)")
    if notes is not None:
        notes.extend(said)
    return np.clip(ink / peak, 0.0, 1.0)


def preprocess(image: Image.Image | np.ndarray | Tensor, notes: list[str] | None = None) -> Tensor:
    """Any digit image -> MNIST format ``(1, 28, 28)`` float32 in [0, 1], white on black.

    Inputs (and ``notes``) as for :func:`to_ink`. The digit's box is scaled to fit 20x20 and its
    centre of mass put at the centre of the 28x28 field, as MNIST was made.

    Raises:
        PreprocessError: empty, blank or huge image, unsupported type, shape or values.
    """
    ink = to_ink(image, notes)
    rows = np.flatnonzero((ink > CROP_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > CROP_THRESHOLD).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.LANCZOS)
    box = np.asarray(ImageOps.autocontrast(small, cutoff=0), dtype=np.float64) / 255.0
    total = box.sum()
    if total <= 0:
        raise PreprocessError("the image is empty: no digit found after cropping")
    ys, xs = np.mgrid[0:nh, 0:nw]
    cy, cx = (ys * box).sum() / total, (xs * box).sum() / total
    # Put the centre of mass at the field centre (13.5, 13.5), rounded to whole pixels as MNIST.
    top, left = int(round(13.5 - cy)), int(round(13.5 - cx))
    top, left = min(max(top, 0), 28 - nh), min(max(left, 0), 28 - nw)
    out = np.zeros((28, 28), dtype=np.float32)
    out[top : top + nh, left : left + nw] = box
    return torch.from_numpy(out).unsqueeze(0)


def preprocess_scene(
    image: Image.Image | np.ndarray | Tensor, size: int = SCENE_SIZE, notes: list[str] | None = None
) -> Tensor:
    """A picture of several digits -> a scene ``(1, size, size)`` float32 in [0, 1], white on black.

    Unlike :func:`preprocess` the digits keep their relative sizes and places (that is what the
    scene models look at): the whole picture is scaled, keeping its aspect ratio, to fit the
    ``size x size`` canvas and centred on it (black bars fill the rest). ``notes`` as for
    :func:`to_ink`.
    """
    ink = to_ink(image, notes)
    h, w = ink.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray((ink * 255).astype(np.uint8)).resize((nw, nh), Image.Resampling.BOX)
    out = np.zeros((size, size), dtype=np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(small, dtype=np.float32) / 255.0
    peak = float(out.max())
    if peak < MIN_CONTRAST:
        raise PreprocessError("the image is empty at scene size: the strokes are too thin to survive scaling")
    return torch.from_numpy(np.clip(out / peak, 0.0, 1.0)).unsqueeze(0)
