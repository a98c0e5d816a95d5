"""Class names for predictions: torchvision's ImageNet names, files, top-k."""

from __future__ import annotations

import json

import pytest
import torch

from viz.classes import ClassNamesError, class_name, load_class_names, top_k


def test_imagenet_names_are_torchvisions_thousand():
    names = load_class_names("imagenet")
    assert len(names) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
    assert load_class_names("digits") == [str(i) for i in range(10)]


def test_names_from_text_and_json_files(tmp_path):
    txt = tmp_path / "names.txt"
    txt.write_text("# my three classes\ncat\n\ndog\n  bird  \n")
    assert load_class_names(txt) == ["cat", "dog", "bird"]
    (tmp_path / "l.json").write_text(json.dumps(["a", "b"]))
    assert load_class_names(tmp_path / "l.json") == ["a", "b"]
    (tmp_path / "d.json").write_text(json.dumps({"0": "zero", "2": "two"}))
    assert load_class_names(tmp_path / "d.json") == ["zero", "1", "two"]  # a missing index keeps its number


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("missing.txt", None, "no class-names file"),
        ("empty.txt", "# nothing\n\n", "holds no class names"),
        ("bad.json", "{", "not valid JSON"),
        ("keys.json", '{"cat": "x"}', "keys must be class indices"),
        ("num.json", "3", "expected a JSON list"),
    ],
)
def test_unreadable_names_say_why(tmp_path, name, text, says):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ClassNamesError, match=says):
        load_class_names(tmp_path / name)


def test_top_k_orders_by_probability_and_names_them():
    p = torch.tensor([0.1, 0.5, 0.05, 0.3, 0.05])
    assert top_k(p, ["a", "b", "c", "d", "e"], 3) == [
        (1, "b", 0.5),
        (3, "d", pytest.approx(0.3)),
        (0, "a", pytest.approx(0.1)),
    ]
    assert [name for _, name, _ in top_k(p, None, 2)] == ["1", "3"]  # no names: the index
    assert len(top_k(p, None, 10)) == 5
    assert class_name(7, ["x"]) == "7" and class_name(0, ["x"]) == "x"


def test_names_that_do_not_fit_the_model_are_said():
    from viz.classes import names_mismatch

    assert names_mismatch(None, 10) is None and names_mismatch(["a"] * 10, 10) is None
    assert names_mismatch(["a"] * 1000, 10).startswith("1000 class names were given for a model with 10 outputs")
