"""A corpus of bad inputs: each gives the error a user sees, naming the file and what was wrong."""
import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from detector.datasets.chip import chip
from detector.labels.coco import read_coco
from detector.datasets.convert import convert
from detector.labels.vector import read_vector, read_vector_labels
from detector.datasets.voc import read_voc
from detector.datasets.yolo import read_yolo
from detector.raster import read_image

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SQUARE = [[[500010, 3999990], [500030, 3999990], [500030, 3999970], [500010, 3999970], [500010, 3999990]]]


def tif(path, *, crs="EPSG:32637", count=3, w=64, h=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = dict(crs=crs, transform=Affine(1, 0, 500000, 0, -1, 4000000)) if crs else {}
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype="uint8", **kw) as d:
        d.write(np.zeros((count, h, w), np.uint8))
    return path


def sparse_tif(path, size, *, block=4096, data_at=None):
    """A tiled ``size`` x ``size`` GeoTIFF whose blocks are never written (GDAL sparse), but for
    one block of zeros at ``data_at`` (its corner, pixels) if given."""
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=block, blockysize=block, sparse_ok=True, crs="EPSG:32637",
                       transform=Affine(1, 0, 500000, 0, -1, 4000000)) as d:
        if data_at is not None:
            from rasterio.windows import Window
            d.write(np.ones((3, block, block), np.uint8), window=Window(*data_at, block, block))
    return path


def yolo(t, label="0 0.5 0.5 0.2 0.2\n", image=None, yaml_text="names: [bunker, shelter]\ntrain: images\n"):
    if image is None:
        tif(t / "images" / "x.tif")
    else:
        (t / "images").mkdir(parents=True, exist_ok=True)
        (t / "images" / "x.tif").write_bytes(image)
    (t / "labels").mkdir(exist_ok=True)
    (t / "labels" / "x.txt").write_text(label)
    (t / "d.yaml").write_text(yaml_text)
    return lambda: read_yolo(t / "d.yaml"), t / "d.yaml"


def voc(t, xml, classes=None):
    tif(t / "p.tif")
    (t / "p.xml").write_text(xml)
    if classes:
        (t / "classes.txt").write_text(classes)
    return lambda: read_voc(t), t / "p.xml"


def coco(t, images=None, annotations=None, name="c.json"):
    """A COCO file with one category; returns (call reading it, its path)."""
    tif(t / "x.tif")
    doc = {"images": [{"id": 1, "file_name": "x.tif", "width": 64, "height": 64}] if images is None else images,
           "categories": [{"id": 1, "name": "bunker"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}] if annotations is None else annotations}
    (t / name).write_text(json.dumps(doc))
    return lambda: read_coco(t / name), t / name


def obj(name="bunker", box=(1, 1, 10, 10)):
    bb = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name><bndbox>{bb}</bndbox></object>"


def ann(*objs, size="<size><width>64</width><height>64</height></size>"):
    return f"<annotation><filename>p.tif</filename>{size}{''.join(objs)}</annotation>"


def geojson(t, features=None, *, raw=None, crs=None, name="l.geojson"):
    p = t / name
    if raw is not None:
        p.write_text(raw)
    else:
        data = {"type": "FeatureCollection", "features": features}
        if crs:
            data["crs"] = {"type": "name", "properties": {"name": crs}}
        p.write_text(json.dumps(data))
    return p


def feat(geom=None, props=None, fid=0):
    return {"type": "Feature", "id": fid, "properties": {"class": "bunker"} if props is None else props,
            "geometry": geom or {"type": "Polygon", "coordinates": SQUARE}}


def over_raster(t, p, raster_crs="EPSG:32637"):
    r = tif(t / "r.tif", crs=raster_crs)
    return lambda: read_vector_labels(p, r), p


def ogr(t, name, driver, *, crs="EPSG:32637", field="class"):
    pyogrio = pytest.importorskip("pyogrio")
    import struct
    ring = SQUARE[0]
    wkb = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", len(ring)) + b"".join(struct.pack("<dd", *q) for q in ring)
    pyogrio.raw.write(t / name, np.array([wkb], dtype=object), [np.array(["bunker"], dtype=object)],
                      fields=[field], crs=crs, geometry_type="Polygon", driver=driver)
    return t / name


CASES = {
    # -- images
    "corrupt image": (lambda t: yolo(t, image=b"II*\x00garbage" * 10), ValueError, r"x\.tif.*not a readable raster image"),
    "empty image": (lambda t: yolo(t, image=b""), ValueError, r"x\.tif.*image file is empty \(0 bytes\)"),
    "missing image": (lambda t: (tif(t / "images" / "x.tif"), (t / "l.txt").write_text("images/gone.tif\n"),
                                 (t / "d.yaml").write_text("names: [a]\ntrain: l.txt\n"),
                                 (lambda: read_yolo(t / "d.yaml"), t / "d.yaml"))[-1],
                      FileNotFoundError, r"image .*gone\.tif: image file does not exist"),
    "wrong band count": (lambda t: (lambda p: (lambda: read_image(p, [1, 2, 3, 4]), p))(tif(t / "g.tif", count=3)),
                         ValueError, r"reads bands \[1, 2, 3, 4\] but the image has 3 band\(s\); missing \[4\]"),
    # -- YOLO
    "bad YAML": (lambda t: yolo(t, yaml_text="names: [a, b\ntrain: images\n"), ValueError, "not valid YAML"),
    "YAML without names": (lambda t: yolo(t, yaml_text="train: images\n"), ValueError, "expected 'names': a list of class names"),
    "YAML names with gaps": (lambda t: yolo(t, yaml_text="names: {0: a, 2: b}\ntrain: images\n"), ValueError, "without gaps"),
    "YAML nc disagrees": (lambda t: yolo(t, yaml_text="nc: 3\nnames: [a, b]\ntrain: images\n"), ValueError, "'nc' is 3 but 'names' lists 2"),
    "YAML split folder missing": (lambda t: yolo(t, yaml_text="names: [a]\ntrain: nowhere\n"), FileNotFoundError, "'train' entry 'nowhere'"),
    "YOLO line with 4 numbers": (lambda t: (lambda f: (f[0], f[1].parent / "labels" / "x.txt"))(yolo(t, "0 0.5 0.5 0.2\n")),
                                 ValueError, r"x\.txt: line 1: expected 5 numbers 'class cx cy w h'"),
    "YOLO coordinates out of [0,1]": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "0 0.5 0.5 0.2 0.2\n1 12 40 3 3\n")),
                                      ValueError, r"x\.txt: line 2: coordinates must be normalized to \[0, 1\]"),
    "YOLO unknown class": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "7 0.5 0.5 0.2 0.2\n")),
                           ValueError, r"line 1: unknown class 7; the data YAML names classes 0\.\.1"),
    "YOLO negative size": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "0 0.5 0.5 0 0.2\n")),
                           ValueError, "line 1: box has non-positive size w=0"),
    "YOLO box past the edge": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "0 0.95 0.5 0.2 0.2\n")),
                               ValueError, "extends outside the image"),
    "YOLO class inf": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "inf 0.5 0.5 0.2 0.2\n")),
                       ValueError, r"x\.txt: line 1: expected finite numbers 'class cx cy w h', got 'inf"),
    "YOLO class nan": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "0 0.5 0.5 0.2 0.2\nnan 0.5 0.5 0.2 0.2\n")),
                       ValueError, r"x\.txt: line 2: expected finite numbers"),
    "YOLO NaN coordinate": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "0 0.5 nan 0.2 0.2\n")),
                            ValueError, r"x\.txt: line 1: expected finite numbers"),
    "YOLO class 1.5": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "1.5 0.5 0.5 0.2 0.2\n")),
                       ValueError, r"x\.txt: line 1: class 1\.5 is not an integer class index \(0\.\.1\)"),
    "YOLO negative class": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "-1 0.5 0.5 0.2 0.2\n")),
                            ValueError, r"x\.txt: line 1: unknown class -1; the data YAML names classes 0\.\.1"),
    "YOLO text": (lambda t: (lambda f: (f[0], t / "labels" / "x.txt"))(yolo(t, "bunker 0.5 0.5 0.2 0.2\n")),
                  ValueError, "expected numbers 'class cx cy w h'"),
    # -- VOC
    "malformed XML": (lambda t: voc(t, "<annotation><filename>p.tif</filename>"), ValueError, "malformed XML"),
    "XML not VOC": (lambda t: voc(t, "<svg></svg>"), ValueError, r"expected a VOC <annotation> root element, got <svg>"),
    "VOC missing bndbox": (lambda t: voc(t, ann("<object><name>bunker</name></object>")), ValueError,
                           r"object 0 \(bunker\): expected <bndbox> with numeric xmin"),
    "VOC negative size": (lambda t: voc(t, ann(obj(box=(10, 1, 5, 10)))), ValueError, "non-positive size"),
    "VOC box outside": (lambda t: voc(t, ann(obj(box=(50, 50, 80, 60)))), ValueError, r"lies outside the 64x64 image"),
    "VOC unknown class": (lambda t: voc(t, ann(obj("tank")), classes="bunker\nshelter\n"), ValueError,
                          r"unknown class 'tank'; expected one of \['bunker', 'shelter'\]"),
    "VOC empty folder": (lambda t: (lambda: read_voc(t), t), ValueError, "no .xml annotation files found"),
    # -- vector labels
    "GeoJSON not JSON": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, raw="{oops")), ValueError, "not valid GeoJSON"),
    "GeoJSON empty file": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, raw="")), ValueError, r"label file is empty \(0 bytes\)"),
    "GeoJSON not a collection": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, raw='{"type": "Polygon"}')),
                                 ValueError, "expected a GeoJSON FeatureCollection"),
    "GeoJSON point": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat({"type": "Point", "coordinates": [1, 2]}, fid=4)])),
                      ValueError, "feature 4: expected a Polygon or MultiPolygon .*got Point"),
    "GeoJSON without class": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat(props={"type": "bunker"}, fid=2)])),
                              ValueError, "feature 2: has no 'class' attribute"),
    "GeoJSON properties a list": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat(), feat(props=[], fid=5)])),
                                  ValueError, r"l\.geojson: feature 5: 'properties' must be a JSON object .*got list \[\]"),
    "GeoJSON properties a string": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat(props="bunker", fid=1)])),
                                    ValueError, r"feature 1: 'properties' must be a JSON object .*got str 'bunker'"),
    "GeoJSON feature not an object": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat(), [1, 2]])),
                                      ValueError, r"feature 1: expected a GeoJSON Feature object, got list"),
    "GeoJSON unknown CRS": (lambda t: (lambda p: (lambda: read_vector(p), p))(geojson(t, [feat()], crs="EPSG:999999")),
                            ValueError, "'crs' name 'EPSG:999999' is not a known CRS"),
    "labels in the wrong CRS": (lambda t: over_raster(t, geojson(t, [feat()])),  # UTM numbers read as lon/lat
                                ValueError, r"none of the 1 labels overlap raster .*r\.tif"),
    "raster without CRS": (lambda t: (lambda p, r: (lambda: read_vector_labels(p, r), r))(
        geojson(t, [feat()], crs="EPSG:32637"), tif(t / "plain.tif", crs=None)), ValueError, "raster has no CRS"),
    "shapefile without .prj": (lambda t: (lambda p: ((p.with_suffix(".prj").unlink(), lambda: read_vector_labels(p, tif(t / "r.tif")))[1], p))(
        ogr(t, "l.shp", "ESRI Shapefile")), ValueError, r"declares no CRS \(a shapefile needs its \.prj\)"),
    "GeoPackage without the class field": (lambda t: (lambda p: (lambda: read_vector(p), p))(ogr(t, "l.gpkg", "GPKG", field="kind")),
                                           ValueError, r"no attribute 'class'; attributes are \['kind'\]"),
    "corrupt GeoPackage": (lambda t: (lambda p: (p.write_bytes(b"SQLite format 3\x00" + b"\x01" * 200), (lambda: read_vector(p), p))[1])(t / "bad.gpkg"),
                           ValueError, "not a readable vector file"),
    # -- chipping
    "chip overlap too big": (lambda t: (lambda r: (lambda: chip(r, geojson(t, [feat()], crs="EPSG:32637"), t / "o", tile_size=64, overlap=64), "overlap"))(tif(t / "r.tif")),
                             ValueError, r"overlap must be in \[0, tile_size=64\), got 64"),
    "chip unknown class": (lambda t: (lambda r: (lambda: chip(r, t / "l.geojson", t / "o", classes=["shelter"]), t / "l.geojson"))(
        (geojson(t, [feat(fid=3)], crs="EPSG:32637"), tif(t / "r.tif"))[1]), ValueError, r"feature 3: unknown class 'bunker'; expected one of \['shelter'\]"),
    "chip a header of 10^6 x 10^6 px": (lambda t: (lambda r: (lambda: chip(r, geojson(t, [feat()], crs="EPSG:32637"), t / "o"), r))(
        sparse_tif(t / "huge.tif", 10**6)),
        ValueError, r"huge\.tif: 1,000,000 x 1,000,000 pixels \(1,000,000 MP, about [\d,]+ windows\) is above the limit "
                    r"of 20,000 MP per raster; .*--max-megapixels 1000000"),
    # -- COCO of the wrong JSON types, absurd sizes, non-finite boxes, paths leaving the dataset
    "COCO file_name not a string": (lambda t: coco(t, images=[{"id": 1, "file_name": 123}]),
                                    ValueError, r"images\[0\]: 'file_name' must be a non-empty string, got 123"),
    "COCO image id a list": (lambda t: coco(t, images=[{"id": [1], "file_name": "x.tif"}]),
                             ValueError, r"images\[0\]: 'id' must be an integer, got \[1\]"),
    "COCO annotations an object": (lambda t: coco(t, annotations={}),
                                   ValueError, "expected a list under 'annotations', got dict"),
    "COCO image of 10^6 x 10^6 px": (lambda t: coco(t, images=[{"id": 1, "file_name": "x.tif", "width": 10**6, "height": 10**6}]),
                                     ValueError, r"images\[0\]: 'width' must be an integer in \[0, 100000\]"),
    "COCO NaN box": (lambda t: coco(t, annotations=[{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, float("nan"), 5, 5]}]),
                     ValueError, r"annotations\[0\] \(id 7\): expected bbox \[x, y, w, h\] of finite numbers"),
    "convert a path outside the dataset": (lambda t: (lambda c: (lambda: convert(c[1], "yolo", t / "o"), c[1]))(
        coco(t / "ds", images=[{"id": 1, "file_name": "../../etc/passwd", "width": 64, "height": 64}], annotations=[])),
        ValueError, r"image 1 file .*etc/passwd lies outside the dataset's folder"),
    "convert missing source": (lambda t: (lambda: convert(t / "nope.json", "yolo", t / "o"), t / "nope.json"), FileNotFoundError, "dataset not found"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_a_clear_error(tmp_path, name):
    make, exc, message = CASES[name]
    call, named = make(tmp_path)
    with pytest.raises(exc, match=message) as e:
        call()
    assert str(named) in str(e.value), str(e.value)


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


CLI_CASES = {
    # the command a user runs, the file it names, what the one line says
    "YOLO class inf": (lambda t: ["data", "convert", str(yolo(t, "inf 0.5 0.5 0.2 0.2\n")[1]), "--to", "coco",
                                  "--out", str(t / "o")], "labels/x.txt", "line 1: expected finite numbers"),
    "GeoJSON properties []": (lambda t: ["data", "chip", str(tif(t / "r.tif")), "--labels",
                                         str(geojson(t, [feat(props=[], fid=2)], crs="EPSG:32637")), "--out", str(t / "o")],
                              "l.geojson", "feature 2: 'properties' must be a JSON object"),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_bad_input_is_one_line_from_the_command_line(tmp_path, capsys, name):
    from detector.cli import main

    make, named, message = CLI_CASES[name]
    rc = main(make(tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0] and message in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_chip_skips_blocks_never_written_and_the_limit_is_a_flag(tmp_path, capsys):
    """A sparse GeoTIFF (one block written of 256) chips to the tiles over that block only, not
    to hundreds of blank ones; the size limit refuses it from the command line until raised."""
    from detector.cli import main

    r = sparse_tif(tmp_path / "s.tif", 4096, block=256, data_at=(0, 0))
    labels = geojson(tmp_path, [feat()], crs="EPSG:32637")  # one object in the written block
    s = chip(r, labels, tmp_path / "o", tile_size=256, overlap=0, keep_empty=1.0)
    assert s["tiles"] == 1 and s["nodata_tiles_skipped"] == 255, s
    assert len(list((tmp_path / "o" / "tiles").iterdir())) == 1
    argv = ["data", "chip", str(r), "--labels", str(labels), "--out", str(tmp_path / "o2"), "--tile-size", "256"]
    assert main(argv + ["--max-megapixels", "10"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(r) in err[0] and "above the limit of 10 MP" in err[0], err
    assert not (tmp_path / "o2" / "dataset.json").exists()
    assert main(argv + ["--max-megapixels", "20"]) == 0
