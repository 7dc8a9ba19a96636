"""revet data from-review: decisions -> COCO tiles with the right boxes and hard negatives."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from detector.labels.coco import read_coco
from detector.datasets.from_review import from_review
from detector.review import build_review
from detector.review.decisions import save_decisions

T = from_origin(500000, 4000000, 0.5, 0.5)


@pytest.fixture()
def review(tmp_path):
    rng = np.random.default_rng(1)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=1024, height=1024, count=3,
                       dtype="uint8", crs="EPSG:32637", transform=T) as ds:
        ds.write(rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8))
    boxes = {"a": [50, 60, 90, 100], "b": [600, 80, 640, 120], "c": [100, 700, 150, 760],
             "d": [700, 700, 760, 740], "e": [300, 320, 340, 360]}
    classes = {"a": "bunker", "b": "revetment", "c": "shelter", "d": "bunker", "e": "bunker"}
    feats = [{"type": "Feature", "geometry": None,
              "properties": {"class": classes[k], "score": 0.9 - i / 10, "pixel_box": b, "det_id": k}}
             for i, (k, b) in enumerate(boxes.items())]
    (tmp_path / "dets.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    build_review(tmp_path / "scene.tif", tmp_path / "dets.geojson", tmp_path / "rv")
    rv = tmp_path / "rv"
    d = lambda i, st, rc: {"id": i, "review_status": st, "class": classes.get(i), "reviewed_class": rc,  # noqa: E731
                           "note": "", "reviewed_at": "2025-01-01T00:00:00Z", "score": 0.5,
                           "box": boxes.get(i, [400, 420, 440, 470]), "seconds": 2.0}
    decisions = [d("a", "accepted", "bunker"), d("b", "rejected", None), d("c", "relabelled", "revetment"),
                 d("drawn-1", "drawn", "shelter")]  # d: unreviewed; e: unreviewed
    review = json.loads((rv / "review.json").read_text())
    save_decisions(rv, review, decisions)
    return rv


def test_from_review_labels_and_hard_negatives(review, tmp_path):
    s = from_review(review, tmp_path / "ds", tile_size=256, overlap=0)
    ls = read_coco(s["dataset"])
    assert ls.classes == ["bunker", "revetment", "shelter"]
    tiles = {r.path.name: r for r in ls.images}
    # positives: accepted a (bunker), relabelled c (revetment), drawn (shelter)
    a = tiles["scene_000000_000000.tif"]
    assert a.boxes.tolist() == [[50, 60, 90, 100]] and ls.classes[a.labels[0]] == "bunker"
    c = tiles["scene_000512_000000.tif"]
    assert c.boxes.tolist() == [[100, 700 - 512, 150, 760 - 512]] and ls.classes[c.labels[0]] == "revetment"
    # the drawn box (400..440, 420..470) lies in tile (256, 256) -- but so does unreviewed e (300..340):
    # that tile is skipped, since e may be a real object nobody looked at
    assert "scene_000256_000256.tif" not in tiles
    assert s["tiles_skipped_unreviewed"] == 1
    # rejected b: a hard-negative tile with no boxes
    b = tiles["scene_000000_000512.tif"]
    assert len(b.boxes) == 0
    assert s["hard_negative_tiles"] == 1 and s["positive_tiles"] == 2 and len(tiles) == 3
    assert s["objects"] == {"bunker": 1, "revetment": 1, "shelter": 0}
    with rasterio.open(review.parent / "ds" / "tiles" / "scene_000000_000512.tif") as t:
        assert t.crs.to_epsg() == 32637 and t.transform.c == pytest.approx(T.c + 512 * 0.5)

    # keeping unreviewed tiles brings the drawn shelter in
    s2 = from_review(review, tmp_path / "ds2", tile_size=256, overlap=0, skip_unreviewed=False)
    ls2 = read_coco(s2["dataset"])
    t = {r.path.name: r for r in ls2.images}["scene_000256_000256.tif"]
    assert t.boxes.tolist() == [[400 - 256, 420 - 256, 440 - 256, 470 - 256]]
    assert ls2.classes[t.labels[0]] == "shelter"


def test_from_review_cli_and_errors(review, tmp_path):
    import argparse

    from detector.datasets.data_cli import add_from_review_command

    p = argparse.ArgumentParser()
    add_from_review_command(p.add_subparsers())
    a = p.parse_args(["from-review", str(review), "--out", str(tmp_path / "ds"), "--tile-size", "512"])
    assert a.func(a) == 0
    assert (tmp_path / "ds" / "dataset.json").exists() and (tmp_path / "ds" / "from_review.json").exists()
    with pytest.raises(FileNotFoundError, match="review.json"):
        from_review(tmp_path, tmp_path / "x")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"decisions": [{"id": "a", "review_status": "maybe", "box": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match="unknown review_status"):
        from_review(review, tmp_path / "y", decisions=bad)


def test_empty_decisions_still_write_valid_files(review):
    import pyogrio

    save_decisions(review, json.loads((review / "review.json").read_text()), [])
    assert pyogrio.read_info(review / "decisions.gpkg", layer="decisions")["features"] == 0
    assert json.loads((review / "decisions.geojson").read_text())["features"] == []
