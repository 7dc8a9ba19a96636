"""Compatibility: the label model moved to :mod:`detector.labels` (torch-free, shared with the
runtime). Import it from there."""
from detector.labels import ImageRecord, LabelSet  # noqa: F401
