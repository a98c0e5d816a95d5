"""A user's package named like one of deformscope's own (``models``, common in research code:
InternImage's classification code is ``models/intern_image.py``) loads and runs beside ours."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import viz
from models.discovery import DiscoveryError, import_factory
from tests.conftest import REPO

BLOCKS = """
import torch
from torch import nn
from torchvision.ops import DeformConv2d


class DeformBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.offset = nn.Conv2d(c, 18, 3, padding=1)
        nn.init.normal_(self.offset.weight, std=0.05)
        self.conv = DeformConv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x, self.offset(x)))
"""
NET = """
from torch import nn

from models.blocks import DeformBlock  # the user's own models package, not deformscope's


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.blocks = nn.Sequential(DeformBlock(8), DeformBlock(8), DeformBlock(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def build():
    return Net()
"""


def write_user_package(folder: Path) -> Path:
    """A user's package ``models`` of two modules (``net`` imports ``models.blocks``) in ``folder``."""
    pkg = folder / "models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    (pkg / "net.py").write_text(textwrap.dedent(NET))
    return folder


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    return write_user_package(tmp_path)


def _ours_still_work() -> None:
    import models
    from models.nets.scenes import SceneNet

    assert Path(models.__file__).resolve().parent == REPO / "models"
    assert type(viz.load("deform_plain")).__name__ == "MnistNet"
    assert SceneNet("dcnv3").arch == "dcnv3"


def test_a_user_package_called_models_loads_by_file_path(user_project):
    build = import_factory(f"{user_project / 'models' / 'net.py'}:build")
    model = build()
    assert type(model).__module__ == "models.net"
    assert type(model.blocks[0]).__module__ == "models.blocks"
    found = viz.load_user_model(f"{user_project / 'models' / 'net.py'}:build")
    assert len(found.sampling_layers()) == 3
    _ours_still_work()
    assert "deformscope_user.models.net" in sys.modules  # kept apart, out of the way


def test_a_user_package_called_models_loads_by_name_from_its_folder(user_project, monkeypatch):
    monkeypatch.chdir(user_project)
    model = import_factory("models.net:build")()
    assert type(model).__name__ == "Net"
    _ours_still_work()


def test_a_missing_file_is_explained(tmp_path):
    with pytest.raises(DiscoveryError, match="no Python file"):
        import_factory(f"{tmp_path / 'nope.py'}:build")
    with pytest.raises(DiscoveryError, match="has no 'missing'"):
        import_factory("examples.dcn_families:missing")


@pytest.mark.slow
def test_export_from_the_users_folder(user_project, tmp_path):
    """``python -m viz.export --model models.net:build`` run in the user's folder (deformscope on
    PYTHONPATH): the user's ``models`` for their code, deformscope's for its own."""
    out = tmp_path / "figs"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "viz.export", "--model", "models.net:build", "--figure", "model_points", "--out", str(out)],
        cwd=user_project, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "model_points.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
