"""Stage 2, the data: CIFAR-10 found, checked, decoded and cached with its provenance
(``cifar10``), and held on the training device, augmented a batch at a time (``loader``).

    from resnet_exp.data import load_cifar10
"""

from .cifar10 import CLASSES, Cifar10, DatasetError, load_cifar10

__all__ = ["CLASSES", "Cifar10", "DatasetError", "load_cifar10"]
