"""Training and evaluation commands, end to end on a tiny budget."""

from __future__ import annotations

import pytest
import torch

from models import load_checkpoint
from models.data.mnist import DataError, Split, load_mnist
from models.train.loop import TrainConfig, accuracy, train


def _toy_split(n: int = 64) -> Split:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.zeros(n, 1, 28, 28)
    images[labels == 0, :, 6:22, 12:16] = 1.0  # vertical bar
    images[labels == 1, :, 12:16, 6:22] = 1.0  # horizontal bar
    return Split(images + 0.05 * torch.rand(images.shape, generator=g), labels, "toy bars")


@pytest.mark.slow
def test_train_is_reproducible_and_learns():
    data = _toy_split()
    cfg = TrainConfig(arch="deform", epochs=10, batch_size=16, lr=3e-3, seed=3, widths=(8, 8, 8, 8))
    m1, log = train(cfg, data, progress=False)
    m2, _ = train(cfg, data, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert log["steps"] == 40 and len(log["epochs"]) == 10
    assert accuracy(m1, data) == 1.0
    # the offsets moved away from their zero start
    assert m1.top[0].offset_conv.weight.abs().sum() > 0


def test_max_steps_stops_early():
    cfg = TrainConfig(arch="regular", epochs=5, batch_size=16, widths=(8, 8, 8, 8), max_steps=3)
    _, log = train(cfg, _toy_split(), progress=False)
    assert log["steps"] == 3


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_mnist(tmp_path, train=False, download=False)


@pytest.mark.slow
def test_train_and_evaluate_commands(mnist_dir, tmp_path, capsys):
    from models import train as train_cmd
    from models.train import evaluate

    out = tmp_path / "ckpt" / "tiny.pt"
    argv = ["--arch", "deform2", "--augment", "rotate", "--epochs", "1", "--max-steps", "4", "--batch-size", "32"]
    argv += ["--data-dir", str(mnist_dir), "--out", str(out), "--no-progress", "--seed", "5"]
    assert train_cmd.main(argv) == 0
    model = load_checkpoint(out)
    meta = model.checkpoint_meta
    assert meta["train"]["arch"] == "deform2" and meta["train"]["seed"] == 5
    assert meta["train"]["augment"] == "rotate" and "rotate U(-60, 60) deg" in meta["train"]["augment_params"]
    assert "10000 digits" in meta["test_data"] and 0.0 <= meta["test_accuracy"] <= 1.0
    assert "test_accuracy_augmented" in meta
    capsys.readouterr()
    assert evaluate.main([str(out), "--augment", "none", "rotate", "--data-dir", str(mnist_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert float(lines[0].split("\t")[2]) == pytest.approx(meta["test_accuracy"], abs=1e-4)
    assert float(lines[1].split("\t")[2]) == pytest.approx(meta["test_accuracy_augmented"], abs=1e-4)


def test_evaluate_reports_a_bad_checkpoint(mnist_dir, tmp_path, capsys):
    from models.train import evaluate

    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    assert evaluate.main([str(bad), "--data-dir", str(mnist_dir)]) == 1
    assert "truncated, corrupt or not a PyTorch checkpoint" in capsys.readouterr().err


def test_bad_augment_name_exits_2(capsys):
    from models import train as train_cmd

    assert train_cmd.main(["--augment", "spin", "--out", "x.pt"]) == 2
    assert "bad augmentation" in capsys.readouterr().err


def test_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*_a, **_k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="download failed"):
        load_mnist(root, train=False)
    assert not root.exists()
