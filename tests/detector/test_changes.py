"""Changes between two dates: shift, matching, statuses, coverage, hysteresis, report, metrics."""
import json

import numpy as np
import pytest
from site_layouts import CLASSES, CRS, boxes_of, layout

from detector.changes import Coverage, compare, estimate_shift, run_changes, site_summaries, site_summary
from detector.objects import box_ring, objects_from_arrays, write_features


def two_dates(seed=0, n_bases=6):
    """Before: the layout. After: 10 % removed, 8 % rebuilt as another class, 12 new objects
    in the bases (25 m beside an existing one). Returns objects and the truth per record."""
    rng = np.random.default_rng(seed)
    boxes, classes, _ = layout(seed=seed, n_bases=n_bases)
    n = len(boxes)
    u = rng.random(n)
    removed, rebuilt = u < 0.10, (u >= 0.10) & (u < 0.18)
    cls_a = classes.copy()
    for i in np.flatnonzero(rebuilt):
        cls_a[i] = [c for c in CLASSES if c != classes[i]][int(rng.integers(0, 2))]
    keep = ~removed
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    src = rng.choice(np.flatnonzero(keep), 12, replace=False)
    new_c = c[src] + [0.0, 60.0]
    ok = [np.hypot(*(c - p).T).min() > 30 for p in new_c]
    new_c = new_c[ok]
    after_boxes = np.concatenate([boxes[keep], boxes_of(new_c, rng)])
    after_cls = np.concatenate([cls_a[keep], rng.choice(CLASSES, len(new_c))]).astype(object)
    before = objects_from_arrays(boxes, classes, crs=CRS, ids=[f"b{i}" for i in range(n)])
    after = objects_from_arrays(after_boxes, after_cls, crs=CRS, ids=[f"a{i}" for i in range(len(after_boxes))])
    truth = {"disappeared": int(removed.sum()), "changed": int(rebuilt.sum()), "appeared": len(new_c),
             "persisted": int((keep & ~rebuilt).sum())}
    return before, after, truth


def status_map(ch):
    """(id_before, id_after) -> status, a comparable view of a result."""
    b = [ch.before.ids[i] if i >= 0 else None for i in ch.ib]
    a = [ch.after.ids[i] if i >= 0 else None for i in ch.ia]
    return dict(zip(zip(b, a), ch.status.tolist()))


def test_statuses_on_known_changes():
    before, after, truth = two_dates()
    ch = compare(before, after)
    assert ch.counts() == {**truth, "uncertain": 0}
    assert abs(ch.shift.dx) < 0.01 and abs(ch.shift.dy) < 0.01


@pytest.mark.parametrize("d,angle", [(1.0, 0.0), (3.0, 2.0), (5.0, 4.0), (5.0, 0.8)])
def test_misregistration_up_to_5m_changes_no_status(d, angle):
    before, after, _ = two_dates(seed=1)
    ref = status_map(compare(before, after))
    dx, dy = d * np.cos(angle), d * np.sin(angle)
    ch = compare(before, after.shifted(dx, dy))
    assert status_map(ch) == ref
    assert ch.shift.dx == pytest.approx(dx, abs=0.05) and ch.shift.dy == pytest.approx(dy, abs=0.05)
    assert np.nanmax(ch.distance_m) < 0.05


def test_shift_estimate_is_robust_to_outliers():
    before, after, _ = two_dates(seed=2)
    rng = np.random.default_rng(0)
    # 40 % clutter near the objects on the after date: offsets all over the search window
    c = after.centres[rng.integers(0, len(after), int(0.4 * len(after)))] + rng.uniform(-20, 20, (int(0.4 * len(after)), 2))
    clutter = objects_from_arrays(boxes_of(c, rng), rng.choice(CLASSES, len(c)), crs=CRS)
    noisy = objects_from_arrays(np.concatenate([after.boxes, clutter.boxes]),
                                np.concatenate([after.classes, clutter.classes]), crs=CRS).shifted(-4.0, 2.5)
    s = estimate_shift(before, noisy)
    assert s.dx == pytest.approx(-4.0, abs=0.2) and s.dy == pytest.approx(2.5, abs=0.2)
    assert s.support >= 0.8 * len(before) * 0.9 - 1


def _write(path, objs, crs):
    write_features(path, [box_ring(b) for b in objs.boxes],
                   [{"class": c, "id": i} for c, i in zip(objs.classes, objs.ids)], crs)


def test_epsg4326_and_utm_inputs_give_the_same_changes(tmp_path):
    from rasterio.crs import CRS as RCRS
    before, after, truth = two_dates(seed=3)
    after = after.shifted(2.0, -3.0)
    for ext in ("geojson", "gpkg"):
        _write(tmp_path / f"b.{ext}", before, RCRS.from_string(CRS))
        _write(tmp_path / f"a.{ext}", after, RCRS.from_string(CRS))
    s1 = run_changes(tmp_path / "b.geojson", tmp_path / "a.geojson", tmp_path / "c1.geojson")
    s2 = run_changes(tmp_path / "b.gpkg", tmp_path / "a.gpkg", tmp_path / "c2.geojson")
    s3 = run_changes(tmp_path / "b.geojson", tmp_path / "a.gpkg", tmp_path / "c3.gpkg")  # mixed
    assert s1["counts"] == s2["counts"] == s3["counts"] == {**truth, "uncertain": 0}
    assert s1["shift"]["dx_m"] == pytest.approx(s2["shift"]["dx_m"], abs=0.01)
    f1 = json.loads((tmp_path / "c1.geojson").read_text())["features"]
    f2 = json.loads((tmp_path / "c2.geojson").read_text())["features"]
    key = lambda f: (str(f["properties"]["id_before"]), str(f["properties"]["id_after"]))  # noqa: E731
    assert {key(f): f["properties"]["status"] for f in f1} == {key(f): f["properties"]["status"] for f in f2}
    assert [s["summary"] for s in s1["sites"]] == [s["summary"] for s in s2["sites"]]
    assert (tmp_path / "c1.summary.json").exists()


def _scene(path, valid_right: bool, bounds=(619700.0, 4249700.0, 620700.0, 4250700.0), res=2.0):
    """A 1 km square RGB scene in UTM whose left half is valid and right half nodata
    (or all valid when ``valid_right``)."""
    import rasterio
    from rasterio.transform import from_origin

    w = int((bounds[2] - bounds[0]) / res)
    img = np.full((3, w, w), 120, np.uint8)
    if not valid_right:
        img[:, :, w // 2:] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=w, count=3, dtype="uint8", crs=CRS, nodata=0,
                       transform=from_origin(bounds[0], bounds[3], res, res)) as dst:
        dst.write(img)
    return path


def test_no_disappeared_where_the_other_date_has_no_valid_pixels(tmp_path):
    # 20 objects over the scene, x from 619750 to 620650; after date: all gone
    rng = np.random.default_rng(0)
    c = np.stack([np.linspace(619750, 620650, 20), rng.uniform(4249800, 4250600, 20)], 1)
    before = objects_from_arrays(boxes_of(c, rng), ["bunker"] * 20, crs=CRS)
    after = objects_from_arrays(np.zeros((0, 4)), [], crs=CRS)
    half = Coverage.from_scenes([_scene(tmp_path / "half.tif", False)], before.crs)
    full = Coverage.from_scenes([_scene(tmp_path / "full.tif", True)], before.crs)
    ch = compare(before, after, cov_after=half, cov_before=full)
    right = before.boxes[:, 2] > 620200 - 1e-9
    st = dict(zip(ch.ib.tolist(), ch.status.tolist()))
    rs = dict(zip(ch.ib.tolist(), ch.reason.tolist()))
    assert all(st[i] == "uncertain" and rs[i] == "no_coverage" for i in np.flatnonzero(before.boxes[:, 2] > 620200))
    assert all(st[i] == "disappeared" for i in np.flatnonzero(before.boxes[:, 0] < 620200 - 1e-9)
               if before.boxes[i, 2] < 620200)
    assert right.any()
    # the same ground fully covered: everything disappeared
    assert compare(before, after, cov_after=full, cov_before=full).counts()["disappeared"] == 20


def test_hysteresis_and_scores():
    c = np.array([[620000.0, 4250000.0], [620100, 4250000], [620200, 4250000], [620300, 4250000]])
    rng = np.random.default_rng(0)
    b = boxes_of(c, rng)
    before = objects_from_arrays(b, ["bunker"] * 4, crs=CRS, scores=[0.9, 0.4, 0.9, 0.9])
    # after: object 2 seen again only at 0.2 (below low: absent), object 3 at 0.45 (not confident)
    after = objects_from_arrays(b[2:], ["bunker"] * 2, crs=CRS, scores=[0.2, 0.45])
    ch = compare(before, after, cov_before=Coverage.from_objects(before), cov_after=Coverage.from_objects(before),
                 min_objects=1)
    st = dict(zip(ch.ib.tolist(), zip(ch.status.tolist(), ch.reason.tolist())))
    assert st[0] == ("disappeared", "")
    assert st[1] == ("uncertain", "low_score")
    assert st[2] == ("disappeared", "")            # 0.2 on the after date counts as absent
    assert st[3] == ("persisted", "")              # matched, even if not confident
    assert ch.dropped["after_below_low"] == 1
    # no scores at all: every object confident
    plain_b = objects_from_arrays(b, ["bunker"] * 4, crs=CRS)
    plain = compare(plain_b, objects_from_arrays(b[:1], ["bunker"], crs=CRS), cov_after=Coverage.from_objects(plain_b))
    assert plain.counts()["disappeared"] == 3
    # without any coverage information, ground 300 m from every after object is not claimed
    far = compare(plain_b, objects_from_arrays(b[:1], ["bunker"], crs=CRS))
    assert far.counts()["disappeared"] == 2 and far.coverage["after"] == "objects"


def test_site_summary_text():
    st = np.array(["appeared", "appeared", "disappeared", "changed", "persisted"], dtype=object)
    cb = np.array(["", "", "revetment", "bunker", "shelter"], dtype=object)
    ca = np.array(["bunker", "bunker", "", "shelter", "shelter"], dtype=object)
    assert site_summary(st, cb, ca) == "+2 bunkers, -1 revetment, 1 bunker->shelter"
    before, after, _ = two_dates(seed=4)
    sums = site_summaries(compare(before, after))
    assert len(sums) == 6 and all(s["summary"] for s in sums if s["changed"])


def test_report_is_offline_with_chips(tmp_path):
    from detector.change_report import write_change_report
    rng = np.random.default_rng(1)
    c = np.stack([rng.uniform(619800, 620100, 8), rng.uniform(4249800, 4250600, 8)], 1)
    before = objects_from_arrays(boxes_of(c, rng), ["bunker"] * 8, crs=CRS)
    after = before.subset(np.arange(5))
    scene = _scene(tmp_path / "s.tif", True)
    cov = Coverage.from_scenes([scene], before.crs)
    ch = compare(before, after, cov_before=cov, cov_after=cov)
    index = write_change_report(ch, tmp_path / "rep", scene_before=scene, scene_after=scene)
    text = index.read_text()
    assert "-3 bunkers" in text and "http" not in text and "<script" not in text
    chips = sorted(p.name for p in (tmp_path / "rep" / "chips").glob("*.png"))
    assert chips == ["site0001_after.png", "site0001_before.png"]
    from PIL import Image
    im = np.asarray(Image.open(tmp_path / "rep" / "chips" / "site0001_before.png"))
    assert (im == [255, 50, 50]).all(-1).any()   # a red (disappeared) box is drawn


def test_cli_wiring(tmp_path, capsys):
    import argparse

    from detector.sites_cli import add_sites_commands, metres
    p = argparse.ArgumentParser()
    add_sites_commands(p.add_subparsers(dest="command", required=True))
    before, after, _ = two_dates(seed=5)
    from rasterio.crs import CRS as RCRS
    _write(tmp_path / "b.geojson", before, RCRS.from_string(CRS))
    _write(tmp_path / "a.geojson", after, RCRS.from_string(CRS))
    a = p.parse_args(["changes", str(tmp_path / "b.geojson"), str(tmp_path / "a.geojson"), "--out",
                      str(tmp_path / "c.geojson"), "--match-distance", "12m"])
    assert a.match_distance == 12.0 and a.func(a) == 0
    assert "changed_sites" in capsys.readouterr().out
    a = p.parse_args(["sites", str(tmp_path / "b.geojson"), "--out", str(tmp_path / "s.geojson"),
                      "--link-distance", "0.3km"])
    assert a.link_distance == 300.0 and a.func(a) == 0
    with pytest.raises(argparse.ArgumentTypeError):
        metres("250px")


def test_confident_means_the_models_class_threshold():
    c = np.array([[620000.0, 4250000.0], [620100, 4250000]])
    b = boxes_of(c, np.random.default_rng(1))
    before = objects_from_arrays(b, ["bunker", "shelter"], crs=CRS, scores=[0.6, 0.6])
    after = objects_from_arrays(np.zeros((0, 4)), [], crs=CRS)
    cov = Coverage.from_objects(before)
    # without recorded thresholds, 0.6 >= high (0.5): both disappeared
    assert compare(before, after, cov_after=cov).counts()["disappeared"] == 2
    # the model's operating points (bunker 0.7, shelter 0.55), as revet predict records them
    before.thresholds = np.array([0.7, 0.55])
    ch = compare(before, after, cov_after=cov)
    st = dict(zip(ch.ib.tolist(), zip(ch.status.tolist(), ch.reason.tolist())))
    assert st == {0: ("uncertain", "low_score"), 1: ("disappeared", "")}


def test_one_structure_claimed_by_two_classes_is_one_object():
    c = np.array([[620000.0, 4250000.0], [620100, 4250000], [620200, 4250000], [620300, 4250000]])
    b = boxes_of(c, np.random.default_rng(2))
    # before: a shelter, and the same box weakly as a bunker; after: it is a bunker now
    before = objects_from_arrays(np.concatenate([b, b[:1]]), ["shelter", "bunker", "bunker", "bunker", "bunker"],
                                 crs=CRS, scores=[0.87, 0.9, 0.9, 0.9, 0.35])
    after = objects_from_arrays(b, ["bunker"] * 4, crs=CRS, scores=[0.9] * 4)
    ch = compare(before, after, min_objects=1)
    assert ch.dropped["before_overlapped"] == 1
    assert ch.counts()["changed"] == 1 and ch.counts()["persisted"] == 3
    assert ch.counts().get("disappeared", 0) == 0


def _date(path, *, obj: bool, ground=(120, 110, 90), canopy: bool = False, size: int = 400):
    """A 0.5 m RGB GeoTIFF of smooth ground of colour ``ground`` (UTM 37N, origin 619900,
    4250100) with, when ``obj``, a bright 30 x 20 m structure and its shadow at (620000,
    4250000); ``canopy``: that ground under green tree crowns (lit tops, shaded sides)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(7)
    img = np.empty((3, size, size), np.float32)
    img[:] = np.array(ground, np.float32)[:, None, None]
    img += rng.normal(0, 2, (1, size, size))
    r0, c0 = 200, 200  # (620000, 4250000)
    if obj:
        img[:, r0 - 20:r0 + 20, c0 - 30:c0 + 30] = 210
        img[:, r0 + 20:r0 + 28, c0 - 30:c0 + 30] = 40
    if canopy:
        yy, xx = np.mgrid[:size, :size]
        for cy, cx in rng.uniform(160, 240, (40, 2)):
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            crown = d2 < 8 ** 2
            lit = np.clip(1.2 - d2 / 64.0 - (yy - cy) / 16.0, 0.3, 1.3)[crown]
            img[0][crown], img[1][crown], img[2][crown] = 40 * lit, 115 * lit, 35 * lit
    img = np.clip(img, 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                       transform=from_origin(619900, 4250100, 0.5, 0.5)) as ds:
        ds.write(img)
    return path


def test_pixels_tell_demolished_from_hidden_under_foliage(tmp_path):
    box = np.array([[619985.0, 4249990, 620015, 4250010]])
    obj = objects_from_arrays(box, ["shelter"], crs=CRS, scores=[0.9])
    nothing = objects_from_arrays(np.zeros((0, 4)), [], crs=CRS)
    b = _date(tmp_path / "before.tif", obj=True)
    cov = Coverage.from_scenes([b], obj.crs)

    def disappeared(after_scene):
        ch = compare(obj, nothing, cov_before=cov, cov_after=cov, scenes=(b, after_scene), min_objects=1)
        return ch.status[0], ch.reason[0]

    assert disappeared(_date(tmp_path / "gone.tif", obj=False)) == ("disappeared", "")
    assert disappeared(_date(tmp_path / "hidden.tif", obj=True, canopy=True)) == ("uncertain", "occluded")
    # demolished and grassed over: green but smooth, so still a change
    assert disappeared(_date(tmp_path / "meadow.tif", obj=False, ground=(80, 130, 60))) == ("disappeared", "")
    # built on a meadow: the earlier date's box is green and smooth, not crowns
    new = compare(nothing, obj, cov_before=cov, cov_after=cov, min_objects=1,
                  scenes=(_date(tmp_path / "field.tif", obj=False, ground=(80, 130, 60)), b))
    assert (new.status[0], new.reason[0]) == ("appeared", "")
    # without the scenes the hidden object is called disappeared
    assert compare(obj, nothing, cov_after=cov, min_objects=1).status[0] == "disappeared"
