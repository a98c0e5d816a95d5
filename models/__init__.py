"""Deformable-conv MNIST classifiers and dense scene models, their regular twins, a fast CPU deformable layer and the
one checkpoint loader everyone uses."""

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.contract import ForwardArgument, ModuleOutput, SamplingLayer
from models.families import describe_layer
from models.geometry import sampling_positions
from models.nets.digits import ARCHS, MnistNet, build_model, count_parameters
from models.nets.scenes import SceneNet
from models.ops.deform_conv import DeformConv2d, deform_conv2d

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
