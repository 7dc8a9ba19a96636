"""Compatibility: the COCO reader and writer moved to :mod:`detector.labels.coco` (torch-free,
shared with the runtime). Import them from there."""
from detector.labels.coco import MAX_SIDE, read_coco, write_coco  # noqa: F401
