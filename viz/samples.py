"""The bundled samples, so the figures and the app work on a fresh clone without any download:
100 MNIST test digits (10 of each class) and the first 48 of the fixed test scenes
(``python -m viz.samples --data-dir ../shared/data`` regenerates the scenes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SAMPLES_FILE = Path(__file__).resolve().parent / "data" / "mnist_test_samples.npz"


@dataclass(frozen=True)
class Samples:
    """``images`` ``(100, 1, 28, 28)`` float32 in [0, 1]; ``labels`` ``(100,)``; ``test_indices``:
    each digit's index in the official MNIST test split."""

    images: Tensor
    labels: Tensor
    test_indices: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_samples() -> Samples:
    with np.load(SAMPLES_FILE, allow_pickle=False) as data:
        images = torch.from_numpy(data["images"].astype(np.float32) / 255.0).unsqueeze(1)
        return Samples(
            images,
            torch.from_numpy(data["labels"].astype(np.int64)),
            torch.from_numpy(data["test_indices"].astype(np.int64)),
        )


#: Natural colour photos for colour models (CC0, from scikit-image's sample data: see the README there).
PHOTOS_DIR = Path(__file__).resolve().parent / "data" / "photos"
PHOTOS = {"chelsea": "a cat (Chelsea)", "coffee": "a cup of coffee"}


def sample_photo(name: str):
    """A bundled colour photo (``PIL.Image``, RGB) by name: one of :data:`PHOTOS`."""
    from PIL import Image

    if name not in PHOTOS:
        raise ValueError(f"no bundled photo {name!r}; choose from {', '.join(PHOTOS)}")
    with Image.open(PHOTOS_DIR / f"{name}.jpg") as img:
        return img.convert("RGB")


SCENES_FILE = Path(__file__).resolve().parent / "data" / "scene_test_samples.npz"
#: How many of the fixed test scenes are bundled (the app and export work without MNIST).
BUNDLED_SCENES = 48


def save_scene_samples(scenes, path: Path = SCENES_FILE) -> Path:
    """Store scenes (a :class:`models.data.scenes.Scenes`) compactly: images as uint8."""
    from models.runtime import atomic_write

    arrays = {
        "images": np.round(scenes.images[:, 0].numpy() * 255).astype(np.uint8),
        "instances": scenes.instances.numpy().astype(np.int8),
        "boxes": scenes.boxes.numpy().astype(np.int16),
        "labels": scenes.labels.numpy().astype(np.uint8),
        "scene": scenes.scene.numpy().astype(np.int16),
        "index": scenes.index.numpy().astype(np.int8),
        "source": scenes.source.numpy().astype(np.int16),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def load_scene_samples(path: Path = SCENES_FILE):
    """The bundled test scenes as :class:`models.data.scenes.Scenes` (the first ``BUNDLED_SCENES`` of
    the fixed test set; images quantised to 8 bits, annotations as generated)."""
    from models.data.scenes import BACKGROUND, MNIST_HEIGHT, Scenes

    with np.load(path, allow_pickle=False) as d:
        images = torch.from_numpy(d["images"].astype(np.float32) / 255.0).unsqueeze(1)
        instances = torch.from_numpy(d["instances"].astype(np.int64))
        boxes = torch.from_numpy(d["boxes"].astype(np.float32))
        labels = torch.from_numpy(d["labels"].astype(np.int64))
        scene = torch.from_numpy(d["scene"].astype(np.int64))
        index = torch.from_numpy(d["index"].astype(np.int64))
        source = torch.from_numpy(d["source"].astype(np.int64))
    classes = torch.full_like(instances, BACKGROUND)
    for s in range(images.shape[0]):
        mine = (scene == s).nonzero().flatten()
        inst = instances[s]
        if mine.numel():
            classes[s] = torch.where(inst >= 0, labels[mine][inst.clamp_min(0)], classes[s])
    heights = boxes[:, 3] - boxes[:, 1]
    return Scenes(images, classes, instances, boxes, labels, heights, heights / MNIST_HEIGHT, scene, index, source)


def main(argv: list[str] | None = None) -> int:
    """Regenerate the bundled scenes from the MNIST test split."""
    import argparse

    from models.data.mnist import DEFAULT_DATA_DIR, load_mnist
    from models.train.scenes import test_scenes

    p = argparse.ArgumentParser(prog="python -m viz.samples", description=main.__doc__)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with MNIST in torchvision's layout")
    p.add_argument("--count", type=int, default=BUNDLED_SCENES)
    args = p.parse_args(argv)
    test = load_mnist(args.data_dir, train=False)
    path = save_scene_samples(test_scenes(test.images, test.labels, count=args.count))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
