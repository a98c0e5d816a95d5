"""Deformable-conv MNIST classifiers and dense scene models, their regular twins, a fast CPU deformable layer and the
one checkpoint loader everyone uses."""

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.contract import ForwardArgument, ModuleOutput, SamplingLayer, describe_layer
from models.deform_conv import DeformConv2d, deform_conv2d
from models.geometry import sampling_positions
from models.nets import ARCHS, MnistNet, build_model, count_parameters
from models.scene_nets import SceneNet

__all__ = [
    "ARCHS",
    "CheckpointError",
    "DeformConv2d",
    "ForwardArgument",
    "ModuleOutput",
    "MnistNet",
    "SamplingLayer",
    "SceneNet",
    "build_model",
    "count_parameters",
    "deform_conv2d",
    "describe_layer",
    "load_checkpoint",
    "sampling_positions",
    "save_checkpoint",
]
