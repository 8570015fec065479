"""Observation encoders (docs/method.md §4.1): ResNet-18/GroupNorm + SpatialSoftmax per camera, low-dim pass-through."""
from decoupled_jax.encoders.obs_encoder import (
    ObservationEncoder,
    camera_module_name,
    check_crop,
    center_crop,
    images_to_unit_range,
    random_crop,
)
from decoupled_jax.encoders.resnet import (
    IMAGE_ENCODER_PARAMS,
    RESNET18_TRUNK_PARAMS,
    BasicBlock,
    ResNet18Conv,
    ResNet18SpatialSoftmaxEncoder,
    SpatialSoftmax,
    group_norm,
    spatial_soft_argmax,
)

__all__ = [
    "ObservationEncoder", "camera_module_name", "center_crop",
    "images_to_unit_range", "random_crop", "IMAGE_ENCODER_PARAMS", "RESNET18_TRUNK_PARAMS",
    "BasicBlock", "ResNet18Conv", "ResNet18SpatialSoftmaxEncoder", "SpatialSoftmax",
    "group_norm", "spatial_soft_argmax",
]
