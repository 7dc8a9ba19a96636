"""The HTML report: every section present, only local files or data URIs, figures readable."""
import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from detector.evaluate import evaluate_tiles, run_evaluation
from detector.report import SCENE_SECTIONS, SECTIONS, write_report
from detector.scene_eval import evaluate_scene_run

from test_evaluate import oracle_for_tiles  # noqa: E402
from test_scene_eval import _oracle  # noqa: E402


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.h2, self.tags, self._in_h2 = [], [], set(), False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for k, v in attrs:
            if k in ("src", "href", "srcset", "poster", "data") and v is not None:
                self.refs.append(v)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data.strip())


def check_offline(index: Path) -> _Refs:
    """The page needs nothing outside its folder: every reference is a data URI or a relative
    path to a file that exists under the report folder; no scripts, fonts or imports."""
    text = index.read_text(encoding="utf-8")
    p = _Refs()
    p.feed(text)
    root = index.parent.resolve()
    for ref in p.refs + re.findall(r"url\(([^)]*)\)", text):
        ref = ref.strip("'\" ")
        if ref.startswith("data:"):
            continue
        assert "://" not in ref and not ref.startswith(("//", "/")), f"non-local reference {ref!r}"
        target = (index.parent / ref).resolve()
        assert target.is_file() and root in target.parents, f"{ref!r} is not a file in the report"
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    assert "@import" not in text and "@font-face" not in text
    return p


@pytest.fixture(scope="module")
def tile_run(synth_small):
    return evaluate_tiles(oracle_for_tiles(synth_small / "test.json"), synth_small / "test.json")


def test_tile_report(tile_run, tmp_path):
    index = write_report(tile_run, tmp_path / "rep")
    p = check_offline(index)
    assert p.h2 == [title for _, title in SECTIONS]
    for png in ("pr_curves.png", "confusion.png", "sweep.png"):
        with Image.open(index.parent / png) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    m = tile_run.metrics
    with open(index.parent / "false_positives.csv") as f:
        fps = list(csv.DictReader(f))
    with open(index.parent / "misses.csv") as f:
        misses = list(csv.DictReader(f))
    assert len(fps) == m["operating"]["fp"] and len(misses) == m["operating"]["fn"]
    assert all(float(r["score"]) >= m["threshold"] for r in fps)
    assert fps[0]["map_x"] and fps[0]["lon"] and fps[0]["crs"] == "EPSG:32637"  # tiles are georeferenced
    html = index.read_text()
    n_crops = len(list((index.parent / "crops").glob("*.png")))
    assert n_crops == min(len(fps), 48) + min(len(misses), 48) and n_crops > 0
    assert f"{m['mAP50']:.3f}" in html and "px (" in html and "lon/lat" in html


def test_scene_report(synth_small, tmp_path):
    det = _oracle(synth_small / "scene.tif", synth_small / "scene.geojson")
    run = evaluate_scene_run(det, synth_small / "scene.tif", synth_small / "scene.geojson")
    index = write_report(run, tmp_path / "rep")
    p = check_offline(index)
    assert set(p.h2) == {title for _, title in SECTIONS + SCENE_SECTIONS}
    html = index.read_text()
    assert "false positives per km²" in html and "FP per km²" in html and "crossing a window boundary" in html


def test_comparison_report(synth_small, tmp_path):
    a = oracle_for_tiles(synth_small / "test.json")
    b = oracle_for_tiles(synth_small / "test.json", seed=3, miss=0.4)
    r = run_evaluation([a, b], data=synth_small / "test.json", report=tmp_path / "cmp")
    index = Path(r["report"])
    p = check_offline(index)
    assert "a/index.html" in p.refs and "b/index.html" in p.refs
    for tag in "ab":
        check_offline(index.parent / tag / "index.html")
    assert "mAP50" in index.read_text()
