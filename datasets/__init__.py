"""Stage 1, the training side of the data (installed as ``detector.datasets``): YOLO and VOC
formats, conversion, chipping, ``revet data check``, the augmentation preview, the synthetic
generator, augmentation and the torch Dataset/DataModule. The label model and the formats the
runtime reads (COCO, vector labels) are :mod:`detector.labels`, below this package.

Torch is imported by :mod:`detector.datasets.torchdata` only; :mod:`~detector.datasets.augment`,
the ``synth_*`` modules and :mod:`~detector.datasets.preview` need OpenCV (albumentations,
``cv2``), which comes with ``revet[train]``, not with the base install.
"""
