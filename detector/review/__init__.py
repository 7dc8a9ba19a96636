"""The analyst's review loop (torch-free): ``revet review`` writes a static review page for a
scene and its detections (:mod:`.app`), optionally served on 127.0.0.1 (:mod:`.server`), which
saves decisions atomically (:mod:`.decisions`); ``revet data from-review`` turns them into
training data (``detector.datasets.from_review``)."""
from detector.review.app import build_review
from detector.review.server import make_server, serve

__all__ = ["build_review", "make_server", "serve"]
