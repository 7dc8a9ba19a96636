"""Stage 1: labels and imagery in (installed as ``detector.datasets``).

Torch-free except :mod:`detector.datasets.torchdata` and :mod:`detector.datasets.augment`.
"""
