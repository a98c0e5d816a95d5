"""The one loader: round trip, and a clear error for every kind of bad file."""

from __future__ import annotations

import stat

import pytest
import torch

from models import CheckpointError, build_model, load_checkpoint, save_checkpoint
from models.checkpoint import FORMAT, VERSION
from models.runtime import default_file_mode


class Payload:
    """An arbitrary class: a safe loader must refuse to rebuild it."""


CONFIG = {"arch": "deform", "widths": [8, 8, 8, 8], "in_channels": 1, "num_classes": 10, "mean": 0.1, "std": 0.3}


def _small(arch: str = "deform"):
    torch.manual_seed(0)
    return build_model(arch, widths=(8, 8, 8, 8), mean=0.1, std=0.3)


@pytest.fixture
def ckpt(tmp_path):
    model = _small()
    with torch.no_grad():
        model.top[0].offset_conv.bias.fill_(0.25)  # a non-trivial offset survives the round trip
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, CONFIG, {"test_accuracy": 0.5})
    return path, model


def test_round_trip(ckpt):
    path, model = ckpt
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.checkpoint_meta["test_accuracy"] == 0.5
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert not list(path.parent.glob("*.tmp")), "atomic save leaves no temporary file"
    assert stat.S_IMODE(path.stat().st_mode) == default_file_mode(), "same mode as a plain open() would give"


def test_loaded_inside_inference_mode_the_model_is_still_differentiable(ckpt):
    # a script may load inside torch.inference_mode(); the ERF and saliency views differentiate
    path, _ = ckpt
    with torch.inference_mode():
        model = load_checkpoint(path)
    assert not any(p.is_inference() for p in model.parameters())
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_truncated_file(ckpt, tmp_path):
    path, _ = ckpt
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint") as err:
        load_checkpoint(cut)
    message = str(err.value)
    assert "\n" not in message and len(message) < 250 + len(str(cut)), "one short line"
    assert "retrain" in message  # says what to do


def test_text_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("nope")
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        load_checkpoint(text)


def test_random_bytes(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        load_checkpoint(junk)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(_small().state_dict(), path)
    with pytest.raises(CheckpointError, match="not a deformscope checkpoint"):
        load_checkpoint(path)


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "obj": Payload()}, path)
    with pytest.raises(
        CheckpointError,
        match=r"Python object of type [\w.]*Payload, and only plain tensors and values are loaded, for safety",
    ):
        load_checkpoint(path)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "arch.pt"
    save_checkpoint(_small(), path, {**CONFIG, "arch": "transformer"}, {})
    with pytest.raises(CheckpointError, match="unknown architecture 'transformer'"):
        load_checkpoint(path)


def test_mismatched_shapes(tmp_path):
    path = tmp_path / "shapes.pt"
    save_checkpoint(_small(), path, {**CONFIG, "widths": [8, 8, 8, 16]}, {})
    with pytest.raises(CheckpointError, match="do not fit architecture 'deform'.*shape mismatch"):
        load_checkpoint(path)


def test_wrong_arch_weights(tmp_path):
    # Regular weights labelled deform: the offset branches are missing.
    path = tmp_path / "mixed.pt"
    save_checkpoint(_small("regular"), path, CONFIG, {})
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)


def test_other_version(tmp_path):
    path = tmp_path / "v.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="version"):
        load_checkpoint(path)
