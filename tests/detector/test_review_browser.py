"""The review page in a real browser (headless Chromium via Playwright): keyboard review,
one drawn box, reload with nothing lost, the saved GeoJSON holds exactly those decisions, and
no request leaves 127.0.0.1."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("REVET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no chromium executable (apt-get install -y chromium, or set REVET_CHROMIUM)", allow_module_level=True)

from detector.review import build_review, make_server  # noqa: E402


@pytest.fixture(scope="module")
def review_dir(tmp_path_factory):
    from detector.datasets.synth import generate_dataset

    root = tmp_path_factory.mktemp("review")
    generate_dataset(root / "synth", n_train=0, n_val=0, n_test=0, scene_size=1024, seed=0, workers=1)
    g = json.loads((root / "synth" / "scene.geojson").read_text())
    for i, f in enumerate(g["features"]):  # ground truth standing in for detections, with scores
        f["properties"]["score"] = round(0.95 - 0.05 * i, 3)
    (root / "dets.geojson").write_text(json.dumps(g))
    build_review(root / "synth" / "scene.tif", root / "dets.geojson", root / "review")
    return root / "review"


@pytest.fixture()
def server(review_dir):
    srv = make_server(review_dir, 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def _wait_ready(page):
    page.wait_for_function("window.revet && window.revet.ready")


def test_keyboard_review_saved_and_offline(review_dir, server):
    cands = json.loads((review_dir / "candidates.json").read_text())["candidates"]
    assert len(cands) >= 4
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server)
            _wait_ready(page)
            st = page.evaluate("revet.state()")
            assert st["served"] and st["index"] == 0 and st["reviewed"] == 0

            page.keyboard.press("t")          # a note on candidate 0, kept with its decision
            page.keyboard.type("clear bunker")
            page.keyboard.press("Escape")
            page.keyboard.press("a")          # candidate 0: accept
            page.keyboard.press("r")          # candidate 1: reject
            page.keyboard.press("3")          # candidate 2: relabel to class 3 (shelter)
            page.keyboard.press("n")          # skip candidate 3
            page.keyboard.press("t")          # a note on candidate 4, then reject it
            page.keyboard.type("looks like a barn")
            page.keyboard.press("Escape")
            page.keyboard.press("r")
            page.keyboard.press("u")          # undo that rejection: candidate 4 unreviewed again
            assert page.evaluate("revet.state().index") == 4
            page.keyboard.press("z")          # whole scene
            page.keyboard.press("b")          # draw a box, class 2 (revetment)
            page.keyboard.press("2")
            x1, y1 = page.evaluate("revet.sceneToClient(100, 120)")
            x2, y2 = page.evaluate("revet.sceneToClient(160, 200)")
            page.mouse.move(x1, y1)
            page.mouse.down()
            page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2)
            page.mouse.move(x2, y2)
            page.mouse.up()
            page.evaluate("revet.flush()")
            st = page.evaluate("revet.state()")
            assert st["saveError"] is None, st["saveError"]
            assert len(st["decisions"]) == 4

            page.screenshot(path=str(review_dir / "screenshot.png"))
            page.reload()                     # nothing lost
            _wait_ready(page)
            after = page.evaluate("revet.state()")
            assert {d["id"]: d["review_status"] for d in after["decisions"]} == \
                {d["id"]: d["review_status"] for d in st["decisions"]}
            assert after["index"] == 3        # the first unreviewed candidate
            assert not errors, errors
        finally:
            browser.close()

    # the saved GeoJSON holds exactly those decisions
    g = json.loads((review_dir / "decisions.geojson").read_text())
    by_id = {f["properties"]["det_id"]: f["properties"] for f in g["features"]}
    assert len(by_id) == 4
    assert by_id[cands[0]["id"]]["review_status"] == "accepted"
    assert by_id[cands[0]["id"]]["reviewed_class"] == cands[0]["class"]
    assert by_id[cands[0]["id"]]["note"] == "clear bunker"
    assert by_id[cands[1]["id"]]["note"] == ""
    assert by_id[cands[1]["id"]]["review_status"] == "rejected"
    assert by_id[cands[1]["id"]]["reviewed_class"] is None
    expect_2 = "accepted" if cands[2]["class"] == "shelter" else "relabelled"
    assert by_id[cands[2]["id"]]["review_status"] == expect_2
    assert by_id[cands[2]["id"]]["reviewed_class"] == "shelter"
    assert cands[3]["id"] not in by_id and cands[4]["id"] not in by_id
    drawn = [p for p in by_id.values() if p["review_status"] == "drawn"]
    assert len(drawn) == 1 and drawn[0]["reviewed_class"] == "revetment"
    bx = drawn[0]["pixel_box"]
    assert bx == pytest.approx([100, 120, 160, 200], abs=2)
    for p in by_id.values():
        assert p["reviewed_at"] and p["model"] == "dets.geojson"
    assert by_id[cands[0]["id"]]["score"] == cands[0]["score"]
    assert "EPSG::32637" in g["crs"]["properties"]["name"]  # the scene's CRS
    # no request left 127.0.0.1
    assert requests
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, hosts


def test_page_from_disk_uses_browser_storage(review_dir, tmp_path):
    """Without the server (file://), decisions survive a reload through localStorage."""
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            ctx = browser.new_context()
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto((review_dir / "index.html").as_uri())
            _wait_ready(page)
            assert not page.evaluate("revet.state().served")
            page.keyboard.press("a")
            page.keyboard.press("r")
            page.reload()
            _wait_ready(page)
            st = page.evaluate("revet.state()")
            assert sorted(d["review_status"] for d in st["decisions"]) == ["accepted", "rejected"]
            with page.expect_download() as dl:
                page.click("#export")
            path = tmp_path / "decisions.json"
            dl.value.save_as(path)
            assert len(json.loads(path.read_text())["decisions"]) == 2
        finally:
            browser.close()
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
