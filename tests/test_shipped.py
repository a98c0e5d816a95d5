"""The checkpoints shipped in the repo load safely, are small, and are as good as docs/digits.md says."""

from __future__ import annotations

import re

import pytest
import torch

import viz
from models import load_checkpoint
from models.data.mnist import load_mnist
from models.train.loop import predict
from tests.conftest import CHECKPOINTS, REPO

EXPECTED = {"deform_plain", "regular_plain", "deform_rts", "regular_rts", "deform2_plain"}


def test_the_expected_checkpoints_are_shipped():
    assert EXPECTED <= set(viz.shipped_checkpoints())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loads_safely_and_is_small(name):
    path = CHECKPOINTS / f"{name}.pt"
    assert path.stat().st_size < 5 * 1024 * 1024
    torch.load(path, weights_only=True)  # nothing but tensors and plain values
    model = load_checkpoint(path)
    assert model.arch == name.split("_")[0]
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_readme_table_matches_the_checkpoints():
    readme = (REPO / "docs" / "digits.md").read_text()  # the digit models' page holds their table
    for name in EXPECTED:
        meta = load_checkpoint(CHECKPOINTS / f"{name}.pt").checkpoint_meta
        row = re.search(rf"^\| `{name}\.pt` \|.*$", readme, flags=re.M)
        assert row, f"docs/digits.md has no table row for {name}.pt"
        assert f"{100 * meta['test_accuracy']:.2f}" in row.group(0)


@pytest.mark.slow
def test_plain_deform_accuracy_on_the_test_split(mnist_dir):
    test = load_mnist(mnist_dir, train=False)
    model = load_checkpoint(CHECKPOINTS / "deform_plain.pt")
    acc = float((predict(model, test.images) == test.labels).float().mean())
    assert acc >= 0.985
    assert acc == pytest.approx(model.checkpoint_meta["test_accuracy"], abs=1e-4)
