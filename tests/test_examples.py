"""examples/dcn_resnet.py's training command: it writes weights the user path loads, and a
missing dataset is an error message, not a traceback."""

from __future__ import annotations

import torch

import models.data.mnist
import viz
from examples import dcn_resnet


def test_training_writes_weights_the_user_path_loads(tmp_path, monkeypatch, capsys):
    g = torch.Generator().manual_seed(0)
    tiny = models.data.mnist.Split(torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g), "16")
    monkeypatch.setattr(models.data.mnist, "load_mnist", lambda data_dir, train=True: tiny)
    out = tmp_path / "w.pt"
    assert dcn_resnet.main(["--epochs", "1", "--batch-size", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy (plain)" in printed and "test accuracy (rotate+translate+scale)" in printed
    model = viz.load_user_model("examples.dcn_resnet:dcn_resnet", weights=out)
    assert viz.capture(model, torch.rand(1, 1, 28, 28)).top.offsets_yx.shape[-2:] == (14, 14)


def test_missing_mnist_is_a_message(monkeypatch, capsys):
    def missing(data_dir, train=True):
        raise models.data.mnist.DataError(f"MNIST is not in {str(data_dir)!r}")

    monkeypatch.setattr(models.data.mnist, "load_mnist", missing)
    assert dcn_resnet.main(["--data-dir", "nowhere"]) == 2
    assert "error: MNIST is not in 'nowhere'" in capsys.readouterr().err
