"""Deformable-conv MNIST classifiers, their regular twins, a fast CPU deformable layer and the
one checkpoint loader everyone uses."""

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.deform_conv import DeformConv2d, deform_conv2d, sampling_positions
from models.nets import ARCHS, MnistNet, SamplingLayer, build_model, count_parameters

__all__ = [
    "ARCHS",
    "CheckpointError",
    "DeformConv2d",
    "MnistNet",
    "SamplingLayer",
    "build_model",
    "count_parameters",
    "deform_conv2d",
    "load_checkpoint",
    "sampling_positions",
    "save_checkpoint",
]
