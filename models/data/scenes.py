"""Scenes: S x S canvases with 1-4 MNIST digits of very different sizes, for dense models.

The paper's adaptation (sampling points spread over large objects, shrink onto small ones,
reach wide on the background) needs images holding objects of many sizes and a dense task in
which every unit must recognise what is under it. A scene here is such an image:

- ``image`` ``(1, S, S)`` float32 in [0, 1], white digits on black (pixel-wise max of the digits);
- ``classes`` ``(S, S)`` int64: the digit's label (0-9) where a digit's ink is above
  :data:`INK` (the digit brightest there wins where two overlap), :data:`BACKGROUND` (10) elsewhere;
- ``instances`` ``(S, S)`` int64: index of that digit in the scene, -1 on the background;
- per digit: ``boxes`` ``(n, 4)`` as ``(x0, y0, x1, y1)`` pixel edges (columns ``x0 .. x1 - 1``,
  rows ``y0 .. y1 - 1``; every pixel of the digit with any ink lies inside), ``labels``,
  ``heights`` (box height in pixels, the digit's size) and ``scales`` (height relative to the
  ~20 px an MNIST digit is tall in its 28 x 28 field).

Generation is deterministic: scene ``i`` of a set depends only on ``(seed, i)`` (its own numpy
generator), so a scene can be regenerated alone and training draws fresh scenes every epoch by
index. Training scenes are made from training digits only and test scenes from test digits only
(the caller passes the split); the shipped test set is ``TEST_SEED``'s first ``TEST_SCENES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.data.transforms import rotate_scale

#: Number of classes of the dense task: digits 0-9 and the background.
NUM_CLASSES = 11
BACKGROUND = 10
#: A pixel belongs to a digit where that digit's intensity is above this.
INK = 0.3
#: Pixels with intensity above this count for a digit's box (all of its visible ink).
BOX_INK = 0.05
#: Seed and size of the fixed test set every scene model is scored on.
TEST_SEED = 2026
TEST_SCENES = 500
#: Digit size classes by box height in pixels: small < 20 <= medium < 34 <= large.
SIZE_EDGES = (20, 34)
SIZE_CLASSES = ("small", "medium", "large")
MNIST_HEIGHT = 20.0  # an MNIST digit's ink is about 20 px tall in its 28 x 28 field


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn.

    Attributes:
        size: canvas side S in pixels.
        min_digits, max_digits: digits per scene, drawn uniformly.
        min_height, max_height: digit box height in pixels, drawn log-uniformly (so small and
            large digits are equally common).
        max_overlap: largest allowed intersection of two digits' boxes, as a fraction of the
            smaller box; a digit that cannot be placed after ``tries`` positions is left out.
        rotate: digits are rotated by U(-rotate, rotate) degrees (0: upright).
    """

    size: int = 64
    min_digits: int = 1
    max_digits: int = 4
    min_height: float = 10.0
    max_height: float = 54.0
    max_overlap: float = 0.15
    rotate: float = 0.0
    tries: int = 30

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"scene size must be at least 16 px, got {self.size}")
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError("need 1 <= min_digits <= max_digits")
        if not 4 <= self.min_height <= self.max_height <= self.size:
            raise ValueError(f"need 4 <= min_height <= max_height <= size ({self.size})")


@dataclass
class Scenes:
    """A batch of scenes (see the module docstring for every field).

    Attributes:
        images: ``(N, 1, S, S)`` float32.
        classes: ``(N, S, S)`` int64, 0-9 digits, 10 background.
        instances: ``(N, S, S)`` int64, digit index within its scene or -1.
        boxes: ``(D, 4)`` float32 ``(x0, y0, x1, y1)`` of all D digits of the batch.
        labels, heights, scales: ``(D,)`` per digit.
        scene: ``(D,)`` int64, which scene each digit belongs to.
        index: ``(D,)`` int64, the digit's instance index within its scene.
        source: ``(D,)`` int64, the digit's index in the MNIST split it came from.
    """

    images: Tensor
    classes: Tensor
    instances: Tensor
    boxes: Tensor
    labels: Tensor
    heights: Tensor
    scales: Tensor
    scene: Tensor
    index: Tensor
    source: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def digits_of(self, i: int) -> Tensor:
        """Indices (into the per-digit arrays) of scene ``i``'s digits."""
        return (self.scene == i).nonzero().flatten()

    def subset(self, idx: list[int] | Tensor) -> Scenes:
        """The scenes ``idx`` (in that order), digits renumbered to match."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        parts = [self.digits_of(int(i)) for i in idx]
        d = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        new_scene = torch.cat([torch.full((len(p),), k, dtype=torch.long) for k, p in enumerate(parts)]) if parts else d
        return Scenes(
            self.images[idx],
            self.classes[idx],
            self.instances[idx],
            self.boxes[d],
            self.labels[d],
            self.heights[d],
            self.scales[d],
            new_scene,
            self.index[d],
            self.source[d],
        )


def size_class(heights: Tensor) -> Tensor:
    """``(D,)`` 0 = small, 1 = medium, 2 = large, by box height (:data:`SIZE_EDGES`)."""
    return torch.bucketize(heights, torch.tensor(SIZE_EDGES, dtype=heights.dtype), right=True)


def _crop(digit: Tensor) -> Tensor:
    """The digit's tight box (pixels above :data:`BOX_INK`) from an ``(H, W)`` image."""
    ink = digit > BOX_INK
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return digit
    return digit[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection of two boxes as a fraction of the smaller one."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def make_scene(digits: Tensor, config: SceneConfig, rng: np.random.Generator) -> dict[str, object]:
    """One scene from a pool of digits ``(M, 28, 28)`` float in [0, 1], using ``rng`` only.

    Returns a dict with ``image (S, S)``, ``classes``, ``instances``, and lists ``boxes``,
    ``pool_index`` (which digit of the pool), ``heights``, ``scales``.
    """
    s = config.size
    n = int(rng.integers(config.min_digits, config.max_digits + 1))
    layers: list[Tensor] = []
    boxes: list[tuple[int, int, int, int]] = []
    pool_index: list[int] = []
    heights: list[float] = []
    for _ in range(n):
        k = int(rng.integers(0, digits.shape[0]))
        target = float(np.exp(rng.uniform(np.log(config.min_height), np.log(config.max_height))))
        angle = float(rng.uniform(-config.rotate, config.rotate)) if config.rotate else 0.0
        src = digits[k]
        if angle:
            src = rotate_scale(src[None], angle, 1.0)[0]
        crop = _crop(src)
        ch, cw = crop.shape
        f = target / ch
        nh, nw = max(2, round(ch * f)), max(2, round(cw * f))
        if nw > s:  # a very wide digit: shrink to fit the canvas
            nh, nw = max(2, round(nh * s / nw)), s
        nh = min(nh, s)
        glyph = F.interpolate(crop[None, None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        glyph = glyph[0, 0].clamp(0, 1)
        glyph = glyph / glyph.max().clamp_min(1e-6)  # full contrast at every size
        placed = False
        for _try in range(config.tries):
            y0 = int(rng.integers(0, s - nh + 1))
            x0 = int(rng.integers(0, s - nw + 1))
            box = (x0, y0, x0 + nw, y0 + nh)
            if all(_overlap(box, b) <= config.max_overlap for b in boxes):
                placed = True
                break
        if not placed:
            continue
        layer = torch.zeros(s, s)
        layer[y0 : y0 + nh, x0 : x0 + nw] = glyph
        # The box holds every pixel with visible ink (the glyph's own tight box after resizing).
        ink = layer > BOX_INK
        rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
        if rows.numel() == 0:
            continue
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        layers.append(layer)
        boxes.append(box)
        pool_index.append(k)
        heights.append(float(box[3] - box[1]))
    if layers:
        stack = torch.stack(layers)  # (n, S, S)
        image, brightest = stack.max(dim=0)
        inked = image > INK
        instances = torch.where(inked, brightest, torch.full_like(brightest, -1))
    else:
        image = torch.zeros(s, s)
        instances = torch.full((s, s), -1, dtype=torch.long)
    return {
        "image": image,
        "instances": instances,
        "boxes": boxes,
        "pool_index": pool_index,
        "heights": heights,
    }


def generate(
    digits: Tensor,
    labels: Tensor,
    count: int,
    seed: int,
    config: SceneConfig | None = None,
    start: int = 0,
) -> Scenes:
    """Scenes ``start .. start + count - 1`` of the set named by ``seed``.

    Args:
        digits: ``(M, 1, 28, 28)`` or ``(M, 28, 28)`` MNIST digits in [0, 1] (one split only).
        labels: ``(M,)``.
        count, seed, start: which scenes; scene ``i`` uses ``np.random.default_rng([seed, i])``.
    """
    config = config or SceneConfig()
    pool = digits[:, 0] if digits.dim() == 4 else digits
    pool = pool.float()
    images, classes, instances = [], [], []
    boxes, lab, heights, scene, index, source = [], [], [], [], [], []
    for j in range(count):
        rng = np.random.default_rng([seed, start + j])
        sc = make_scene(pool, config, rng)
        inst = sc["instances"]
        scene_labels = torch.tensor([int(labels[k]) for k in sc["pool_index"]], dtype=torch.long)
        cls = torch.full_like(inst, BACKGROUND)
        if scene_labels.numel():
            cls = torch.where(inst >= 0, scene_labels[inst.clamp_min(0)], cls)
        images.append(sc["image"])
        classes.append(cls)
        instances.append(inst)
        for d, (b, k, h) in enumerate(zip(sc["boxes"], sc["pool_index"], sc["heights"], strict=True)):
            boxes.append(b)
            lab.append(int(labels[k]))
            heights.append(h)
            scene.append(j)
            index.append(d)
            source.append(k)
    heights_t = torch.tensor(heights, dtype=torch.float32)
    return Scenes(
        images=torch.stack(images).unsqueeze(1),
        classes=torch.stack(classes),
        instances=torch.stack(instances),
        boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        labels=torch.tensor(lab, dtype=torch.long),
        heights=heights_t,
        scales=heights_t / MNIST_HEIGHT,
        scene=torch.tensor(scene, dtype=torch.long),
        index=torch.tensor(index, dtype=torch.long),
        source=torch.tensor(source, dtype=torch.long),
    )


def rescale_digit(image: Tensor, instances: Tensor, index: int, factor: float) -> tuple[Tensor, Tensor]:
    """Redraw digit ``index`` of a scene ``factor`` times larger (or smaller), about its centre.

    The digit is taken as the pixels of its box that it owns or that belong to no digit (its
    faint edges), removed, resized bilinearly and put back centred where it was, clipped to the
    canvas; the other digits stay. Returns the new ``image (S, S)`` and the digit's new box
    ``(4,)`` as ``(x0, y0, x1, y1)`` (tight around its visible ink, ``BOX_INK``).
    """
    s_h, s_w = image.shape
    mine = instances == index
    ys, xs = mine.nonzero(as_tuple=True)
    if ys.numel() == 0:
        raise ValueError(f"digit {index} owns no pixel in this scene")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    # grow by 2 px to take the anti-aliased edge below INK along
    y0, x0, y1, x1 = max(0, y0 - 2), max(0, x0 - 2), min(s_h, y1 + 2), min(s_w, x1 + 2)
    region = torch.zeros_like(image, dtype=torch.bool)
    region[y0:y1, x0:x1] = True
    take = region & ((instances == index) | (instances < 0))
    glyph = torch.where(take, image, torch.zeros_like(image))[y0:y1, x0:x1]
    rest = torch.where(take, torch.zeros_like(image), image)
    nh, nw = max(2, round((y1 - y0) * factor)), max(2, round((x1 - x0) * factor))
    big = F.interpolate(glyph[None, None], size=(nh, nw), mode="bilinear", antialias=factor < 1, align_corners=False)
    big = big[0, 0].clamp(0, 1)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    ty, tx = round(cy - nh / 2), round(cx - nw / 2)
    canvas = torch.zeros_like(image)
    sy0, sx0 = max(0, ty), max(0, tx)
    sy1, sx1 = min(s_h, ty + nh), min(s_w, tx + nw)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0:sy1, sx0:sx1] = big[sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx]
    out = torch.maximum(rest, canvas)
    ink = canvas > BOX_INK
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    if rows.numel() == 0:
        box = torch.tensor([cx, cy, cx + 1, cy + 1]).floor()
    else:
        box = torch.tensor([float(cols[0]), float(rows[0]), float(cols[-1]) + 1, float(rows[-1]) + 1])
    return out, box


def config_from_dict(d: dict[str, object] | None) -> SceneConfig:
    """A :class:`SceneConfig` from a stored dict (unknown keys are an error)."""
    return SceneConfig(**(d or {}))  # type: ignore[arg-type]


__all__ = [
    "BACKGROUND",
    "INK",
    "NUM_CLASSES",
    "SIZE_CLASSES",
    "SIZE_EDGES",
    "TEST_SCENES",
    "TEST_SEED",
    "SceneConfig",
    "Scenes",
    "config_from_dict",
    "generate",
    "make_scene",
    "rescale_digit",
    "size_class",
]
