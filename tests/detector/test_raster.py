"""GDAL paths (detector/raster.py): ``revet predict`` takes ``/vsicurl/`` (and ``/vsis3/``, URLs)
as inputs everywhere, and GDAL fetches only the blocks the windows need.

The scene is served by a small HTTP server with byte-range support, bound to 127.0.0.1 and run
in its own process (GDAL's reads hold the GIL, so a server thread in this process would
deadlock), which logs every request it answers.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")

from scoring_models import write_peak_model, write_scene  # noqa: E402

from detector import raster  # noqa: E402
from detector.predict import collect_scenes, predict_files, scene_key  # noqa: E402
from detector.predict_cli import main  # noqa: E402

SERVER = r'''
import http.server, json, os, re, sys
root, log_path = sys.argv[1], sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        path = os.path.join(root, self.path.split("?")[0].lstrip("/"))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        m = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
        if m and not head:
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            body, code = data[a:b + 1], 206
        else:
            body, code = data, 200
        self.send_response(code)
        if code == 206:
            self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(len(data) if head else len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        with open(log_path, "a") as f:
            f.write(json.dumps({"method": self.command, "range": self.headers.get("Range"), "status": code,
                                "bytes": 0 if head else len(body)}) + "\n")

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


@pytest.fixture
def served(tmp_path):
    """(folder served, request log, base URL) of a range-capable HTTP server on 127.0.0.1."""
    root, log = tmp_path / "www", tmp_path / "requests.jsonl"
    root.mkdir()
    (tmp_path / "server.py").write_text(SERVER)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(root), str(log)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield root, log, f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_gdal_paths_kept_as_given():
    url = "/vsicurl/https://host.example/a/b/scene.tif?X-Sig=1.2"
    for p in (url, "/vsis3/bucket/key/scene.tif", "s3://bucket/scene.tif", "https://h/x.tif"):
        assert raster.is_gdal_path(p) and raster.as_path(p) == p
    assert not raster.is_gdal_path("scenes/a.tif") and raster.as_path("a.tif") == Path("a.tif")
    assert raster.path_name(url) == "scene.tif" and raster.path_name("/d/x.tif") == "x.tif"
    scenes, _ = collect_scenes([url, "/vsis3/bucket/scene.tif"])
    assert [s.path for s in scenes] == [url, "/vsis3/bucket/scene.tif"]  # the // of the URL survives
    assert [s.name for s in scenes] == ["scene", "scene-2"] and scene_key(scenes[0].path) == url


def test_vsicurl_scene_scored_reading_only_the_bands_it_needs(served, tmp_path, capsys):
    root, log, base = served
    # 8 bands stored band by band (PLANARCONFIG=SEPARATE) in 256-px tiles: the model reads 3 of them
    scene = write_scene(root / "scene.tif", 1024, seed=3, bands=8, interleave="band")
    model = write_peak_model(tmp_path / "peaks.onnx", bands=(1, 2, 3))
    url = f"/vsicurl/{base}/scene.tif"

    local = predict_files(model, [str(scene)], tmp_path / "local", formats="coco,geojson")
    log.unlink(missing_ok=True)
    rc = main(["predict", str(model), url, "--out", str(tmp_path / "remote"), "--format", "coco,geojson",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["scored"] == 1 and summary["scenes"][0]["source"] == url
    assert summary["detections"] == local["detections"] > 0
    assert (tmp_path / "remote" / "scene.coco.json").read_bytes() == (tmp_path / "local" / "scene.coco.json").read_bytes()
    feats = json.loads((tmp_path / "remote" / "scene.geojson").read_text())["features"]
    assert {f["properties"]["source"] for f in feats} == {url}

    requests = [json.loads(line) for line in log.read_text().splitlines()]
    gets = [r for r in requests if r["method"] == "GET"]
    assert gets and all(r["status"] == 206 and r["range"] for r in gets), requests  # range requests only
    served_bytes = sum(r["bytes"] for r in gets)
    size = scene.stat().st_size
    assert served_bytes < 0.5 * size, f"fetched {served_bytes} of {size} bytes for 3 of 8 bands"

    # the journal keys a GDAL path as given: a resume skips it
    again = predict_files(model, [url], tmp_path / "remote", formats="coco,geojson", resume=True)
    assert again["resumed"] == 1 and again["scored"] == 0


def test_unreachable_gdal_path_is_a_named_failure(served, tmp_path):
    _, _, base = served
    model = write_peak_model(tmp_path / "peaks.onnx")
    url = f"/vsicurl/{base}/missing.tif"
    s = predict_files(model, [url], tmp_path / "out")
    assert s["scored"] == 0 and [f["path"] for f in s["failed"]] == [url]
    assert url in s["failed"][0]["error"]


def _vrt(path: Path, source: str, size: int = 256, *, relative: bool = False) -> Path:
    """A 3-band VRT of ``size`` px whose bands read ``source`` (GDAL's SimpleSource)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'</SimpleSource></VRTRasterBand>' for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32637</SRS>'
                    f'<GeoTransform>500000, 0.5, 0, 4000000, 0, -0.5</GeoTransform>{bands}</VRTDataset>')
    return path


@pytest.mark.parametrize("form", ["http", "vsicurl", "nested"])
def test_local_vrt_with_a_network_source_is_refused_unfetched(served, tmp_path, caplog, monkeypatch, form):
    """A local VRT naming an HTTP source (directly, through /vsicurl/, or through a local VRT it
    names) is refused with a line naming the VRT and the source; the server sees no request.
    ``--allow-network`` lets it through (and then the server is asked)."""
    root, log, base = served
    write_scene(root / "scene.tif", 256, seed=1)
    model = write_peak_model(tmp_path / "peaks.onnx")
    source = f"{base}/scene.tif" if form == "http" else f"/vsicurl/{base}/scene.tif"
    vrt = _vrt(tmp_path / "in.vrt", source)
    if form == "nested":
        _vrt(tmp_path / "inner.vrt", source)
        vrt = _vrt(tmp_path / "outer.vrt", "inner.vrt", relative=True)
    monkeypatch.delenv(raster.ALLOW_NETWORK_ENV, raising=False)
    with pytest.raises(ValueError, match=rf"{vrt}: this local VRT reads the network source "
                                         rf"{source}; .*--allow-network"):
        raster.open_raster(vrt)
    rc = main(["predict", str(model), str(vrt), "--out", str(tmp_path / "o.geojson"), "--no-progress"])
    assert rc == 2  # the scene failed, by name; the job's other scenes would have been scored
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert f"{vrt}: this local VRT reads the network source {source}" in line and "Traceback" not in caplog.text
    assert not log.exists() or not log.read_text(), log.read_text()  # not one request
    rc = main(["predict", str(model), str(vrt), "--out", str(tmp_path / "ok.geojson"), "--no-progress",
               "--allow-network"])
    assert rc == 0 and log.read_text()
