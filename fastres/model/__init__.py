"""fastres.model: the network (ResNet v1.5, torchvision's state_dict keys) and its BN variants; imports no other
fastres package.

  resnet    ResNet-18/34/50/101/152, build_model, ARCHS
  bn        BN over groups of processes, BN statistics recomputed for evaluation
"""

from fastres.model.resnet import (
    ARCHS,
    BasicBlock,
    Bottleneck,
    ResNet,
    build_model,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)

__all__ = [
    "ARCHS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_model",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
