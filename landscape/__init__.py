"""landscape: how dense (SGD) and sparse (gRDA) minima of a neural network are connected."""

__version__ = "0.1.0"
