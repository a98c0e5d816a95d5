"""The data the models learn from: MNIST in torchvision's layout (``mnist``), scenes of digits of
many sizes built from it (``scenes``), and the seeded augmentations (``transforms``)."""
