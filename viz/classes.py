"""Class names, so that a prediction reads "tabby cat 41%" rather than "281".

names = load_class_names("imagenet")          # torchvision's 1,000 ImageNet category names
names = load_class_names("my_classes.txt")    # one name per line (or a JSON list / {index: name})
top_k(probabilities, names, 5)                # [(281, "tabby", 0.41), ...]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

#: the names ``--classes`` accepts besides a file
BUILTIN = {"imagenet": "torchvision's 1,000 ImageNet-1k category names", "digits": "0 to 9"}


class ClassNamesError(ValueError):
    """The class names could not be read; the message says why."""


def load_class_names(spec: str | Path) -> list[str]:
    """``"imagenet"``, ``"digits"`` or a file: a text file with one name per line (blank lines
    and ``#`` comments skipped), a JSON list, or a JSON object ``{"0": "name", ...}`` (missing
    indices are named by their number)."""
    if str(spec) == "imagenet":
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)
    if str(spec) == "digits":
        return [str(i) for i in range(10)]
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClassNamesError(f"no class-names file {str(path)!r} (or give one of: {', '.join(BUILTIN)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassNamesError(f"cannot read class names from {str(path)!r}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClassNamesError(f"{str(path)!r} is not valid JSON: {exc}") from None
        if isinstance(data, list):
            return [str(v) for v in data]
        if isinstance(data, dict):
            try:
                by_index = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise ClassNamesError(f"{str(path)!r}: the JSON object's keys must be class indices") from None
            if not by_index or min(by_index) < 0:
                raise ClassNamesError(f"{str(path)!r}: no class indices (or a negative one)")
            return [by_index.get(i, str(i)) for i in range(max(by_index) + 1)]
        raise ClassNamesError(f"{str(path)!r}: expected a JSON list of names or an object of index: name")
    names = [ln.strip() for ln in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ClassNamesError(f"{str(path)!r} holds no class names (one per line)")
    return names


def class_name(index: int, names: list[str] | None) -> str:
    """``names[index]``, or the index as text where there is no name for it."""
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def names_mismatch(names: list[str] | None, num_classes: int) -> str | None:
    """A sentence when the class names do not fit the model's output, else None."""
    if names is None or len(names) == num_classes:
        return None
    return (
        f"{len(names)} class names were given for a model with {num_classes} outputs: "
        "names are matched by index, and outputs without a name show their number."
    )


def top_k(probabilities: Tensor, names: list[str] | None = None, k: int = 5) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes of one prediction ``(num_classes,)``, most probable first,
    as (index, name, probability)."""
    p = probabilities.detach().flatten().float().cpu()
    values, indices = torch.topk(p, min(k, p.numel()))
    return [(int(i), class_name(int(i), names), float(v)) for v, i in zip(values, indices, strict=True)]


def top_k_text(best: list[tuple[int, str, float]]) -> str:
    """:func:`top_k`'s answer in words: ``"tabby 41.0%, tiger cat 20.3%"``."""
    return ", ".join(f"{name} {p:.1%}" for _, name, p in best)


__all__ = ["BUILTIN", "ClassNamesError", "class_name", "load_class_names", "names_mismatch", "top_k", "top_k_text"]
