"""Review folder, server, decisions files and QGIS styles (no browser)."""
from __future__ import annotations

import http.client
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from detector.review import build_review, make_server
from detector.review.candidates import detection_id, read_candidates
from detector.runner import Detections

CRS = "EPSG:32637"
T = from_origin(500000, 4000000, 0.5, 0.5)


def _scene(path: Path, size=600, count=4, dtype="uint16"):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 4000, (count, size, size)).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=count, dtype=dtype,
                       crs=CRS, transform=T, nodata=0) as ds:
        ds.write(data)
    return path


def _dets(scene: Path, out: Path, fmt="geojson"):
    from detector.outputs import write_detections

    boxes = np.array([[10, 10, 40, 50], [300, 300, 340, 330], [500, 100, 560, 150]], np.float32)
    det = Detections(boxes, np.array([0.9, 0.5, 0.7], np.float32), np.array([0, 1, 2]),
                     ("bunker", "revetment", "shelter"), crs=rasterio.crs.CRS.from_string(CRS),
                     transform=T, path=scene)
    return write_detections([det], out, fmt)


@pytest.fixture()
def review(tmp_path):
    scene = _scene(tmp_path / "scene.tif")
    dets = _dets(scene, tmp_path / "dets.geojson")
    build_review(scene, dets, tmp_path / "rv", tile=256)
    return tmp_path / "rv"


def test_candidates_sorted_with_stable_ids_from_geojson_and_gpkg(tmp_path):
    scene = _scene(tmp_path / "scene.tif", count=1, dtype="float32")
    gj = read_candidates(_dets(scene, tmp_path / "d.geojson"), rasterio.crs.CRS.from_string(CRS), T, "scene.tif")
    gp = read_candidates(_dets(scene, tmp_path / "d.gpkg", "gpkg"), rasterio.crs.CRS.from_string(CRS), T, "scene.tif")
    assert gj.ids == gp.ids and gj.classes == ["bunker", "shelter", "revetment"]
    assert gj.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    np.testing.assert_allclose(gj.boxes[0], [10, 10, 40, 50], atol=1e-3)
    assert gj.ids[0] == detection_id("scene.tif", "bunker", [10, 10, 40, 50])
    # geometry only (no pixel box): reprojected from lon/lat into scene pixels
    doc = json.loads((tmp_path / "d.geojson").read_text())
    for f in doc["features"]:
        del f["properties"]["pixel_box"]
    (tmp_path / "geom.geojson").write_text(json.dumps(doc))
    geo = read_candidates(tmp_path / "geom.geojson", rasterio.crs.CRS.from_string(CRS), T, "scene.tif")
    np.testing.assert_allclose(geo.boxes, gj.boxes, atol=0.01)
    assert geo.ids == gj.ids


def test_review_folder_any_bands_and_dtype(review):
    data = json.loads((review / "candidates.json").read_text())
    assert data["scene"]["levels"] == 3 and len(data["candidates"]) == 3
    assert (review / "tiles/0/0_0.jpg").exists() and (review / "tiles/2/2_2.jpg").exists()
    html = (review / "index.html").read_text() + (review / "app.js").read_text() + (review / "app.css").read_text()
    assert "http://" not in html.replace("http://mrcc", "") and "https://" not in html  # nothing external
    assert json.loads((review / "review.json").read_text())["crs_wkt"]


@pytest.fixture()
def server(review):
    srv = make_server(review, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(port, path, host=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    c.putheader("Host", host or f"127.0.0.1:{port}")
    c.endheaders()
    r = c.getresponse()
    return r.status, r.read()


def _post(port, body, origin=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    c.request("POST", "/api/decision", body=json.dumps(body), headers=headers)
    r = c.getresponse()
    return r.status, json.loads(r.read())


def test_server_binds_loopback_only_and_refuses_paths_outside(server, review, tmp_path):
    host, port = server.server_address
    assert host == "127.0.0.1"
    (review.parent / "secret.txt").write_text("no")
    # not reachable on the machine's other addresses
    other = socket.gethostbyname(socket.gethostname())
    if other != "127.0.0.1":
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=1)
    assert _get(port, "/index.html")[0] == 200
    for bad in ("/../secret.txt", "/%2e%2e/secret.txt", "/tiles/../../secret.txt", "/..%2fsecret.txt",
                "/.revet.lock", "/%2Ftmp"):
        status, body = _get(port, bad)
        assert status in (403, 404), (bad, status)
        assert b"no" != body
    assert _get(port, "/", host="evil.example:80")[0] == 403  # DNS rebinding
    assert _get(port, "/tiles/")[0] == 404                      # no listings


def test_server_saves_atomically_in_scene_crs_with_styles(server, review):
    port = server.server_address[1]
    cands = json.loads((review / "candidates.json").read_text())["candidates"]
    c0, c1 = cands[0], cands[1]
    ok = {"id": c0["id"], "review_status": "accepted", "class": c0["class"], "reviewed_class": c0["class"],
          "note": "clear", "reviewed_at": "2025-01-01T00:00:00Z", "score": c0["score"], "box": c0["box"]}
    assert _post(port, ok)[0] == 200
    assert _post(port, {**ok, "id": c1["id"], "review_status": "rejected", "box": c1["box"]})[0] == 200
    assert _post(port, {**ok, "id": "x", "reviewed_class": "tank"})[0] == 400
    assert _post(port, ok, origin="http://evil.example")[0] == 403
    g = json.loads((review / "decisions.geojson").read_text())
    assert [f["properties"]["review_status"] for f in g["features"]] == ["accepted", "rejected"]
    ring = g["features"][0]["geometry"]["coordinates"][0]
    x1, y1 = c0["box"][:2]
    assert ring[0] == pytest.approx([T.c + x1 * T.a, T.f + y1 * T.e])  # scene CRS, not lon/lat
    import pyogrio

    info = pyogrio.read_info(review / "decisions.gpkg", layer="decisions")
    assert info["features"] == 2 and "32637" in info["crs"]
    for f in ("review_status", "reviewed_class", "note", "reviewed_at", "model", "score", "det_id"):
        assert f in list(info["fields"])
    con = sqlite3.connect(review / "decisions.gpkg")
    rows = con.execute("SELECT f_table_name, useAsDefault, styleQML FROM layer_styles").fetchall()
    con.close()
    assert len(rows) == 1 and rows[0][0] == "decisions" and rows[0][1] == 1
    assert 'attr="review_status"' in rows[0][2]
    assert (review / "decisions.qml").exists()
    assert not list(review.glob(".tmp.*"))
    # undo removes; a fresh server (restart) reads what was saved
    assert _post(port, {"id": c1["id"], "undo": True})[0] == 200
    from detector.review.server import ReviewStore

    assert [d["id"] for d in ReviewStore(review).snapshot()["decisions"]] == [c0["id"]]
    assert [f["properties"]["det_id"] for f in json.loads((review / "decisions.geojson").read_text())["features"]] \
        == [c0["id"]]


def test_styles_sidecar_and_layer_styles_for_predict_outputs(tmp_path):
    from detector.styles import detection_qml, qml_path, style_output
    import xml.dom.minidom

    scene = _scene(tmp_path / "scene.tif", count=3, dtype="uint8")
    gpkg = _dets(scene, tmp_path / "d.gpkg", "gpkg")
    gj = _dets(scene, tmp_path / "d.geojson")
    qml = detection_qml(["bunker", "revetment", "shelter"])
    xml.dom.minidom.parseString(qml.split("\n", 1)[1])  # well-formed
    style_output(gpkg, qml)
    style_output(gj, qml)
    assert qml_path(gj).exists() and qml_path(gj).name == "d.qml"
    con = sqlite3.connect(gpkg)
    (n,) = con.execute("SELECT count(*) FROM layer_styles WHERE f_table_name='detections' AND useAsDefault=1").fetchone()
    (kind,) = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name='layer_styles'").fetchone()
    con.close()
    assert n == 1 and kind == "attributes"
    import pyogrio

    assert pyogrio.read_info(gpkg, layer="detections")["features"] == 3  # still a valid GeoPackage


def test_review_cli_help_and_no_torch():
    code = ("import sys, argparse; from detector.review_cli import add_review_command; from detector.datasets.data_cli import add_from_review_command;"
            "p = argparse.ArgumentParser(); s = p.add_subparsers(); add_review_command(s);"
            "import detector.review, detector.review.server;"
            "assert 'torch' not in sys.modules, 'review imports torch'")
    subprocess.run([sys.executable, "-c", code], check=True)
