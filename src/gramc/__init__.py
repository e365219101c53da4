"""gramc: train, evaluate, diagnose and serve GRAM-C generative recommenders."""

__version__ = "0.1.0"
