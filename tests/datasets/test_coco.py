import json

import numpy as np
import pytest

from detector.datasets.coco import read_coco, write_coco


def _write(tmp_path, data, name="d.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _dataset(**over):
    d = {"images": [{"id": 7, "file_name": "a.tif", "width": 64, "height": 64},
                    {"id": 9, "file_name": "b.tif", "width": 64, "height": 64}],
         "annotations": [{"id": 1, "image_id": 7, "category_id": 12, "bbox": [1, 2, 10, 20], "iscrowd": 0}],
         "categories": [{"id": 12, "name": "shelter"}, {"id": 3, "name": "bunker"}]}
    d.update(over)
    return d


def test_names_not_ids_decide_classes(tmp_path):
    ls = read_coco(_write(tmp_path, _dataset()))
    assert ls.classes == ["bunker", "shelter"]  # category-id order
    rec = ls.images[0]
    assert rec.path == tmp_path / "a.tif"
    np.testing.assert_allclose(rec.boxes, [[1, 2, 11, 22]])
    remapped = ls.remap(["bunker", "revetment", "shelter"])
    assert remapped.images[0].labels.tolist() == [2]
    assert remapped.images[1].labels.tolist() == []  # empty image kept


def test_roundtrip(tmp_path):
    ls = read_coco(_write(tmp_path, _dataset()))
    out = write_coco(ls, tmp_path / "sub" / "again.json")
    again = read_coco(out)
    assert again.classes == ls.classes
    assert again.images[0].path.resolve() == (tmp_path / "a.tif").resolve()
    np.testing.assert_allclose(again.images[0].boxes, ls.images[0].boxes)


@pytest.mark.parametrize("data, message", [
    ("not json", "not valid COCO JSON"),
    ([], "expected a COCO JSON object"),
    ({"images": []}, "expected a list under 'categories'"),
    (_dataset(annotations=[{"id": 5, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}]), "annotations\\[0\\] \\(id 5\\) refers to unknown image_id 99"),
    (_dataset(annotations=[{"id": 5, "image_id": 7, "category_id": 4, "bbox": [0, 0, 1, 1]}]), "unknown category_id 4"),
    (_dataset(annotations=[{"id": 5, "image_id": 7, "category_id": 3, "bbox": [0, 0, 0, 5]}]), "non-positive size"),
    (_dataset(annotations=[{"id": 5, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5]}]), "expected bbox \\[x, y, w, h\\]"),
    (_dataset(images=[{"id": 1, "file_name": "a"}, {"id": 1, "file_name": "b"}], annotations=[]), "duplicate image id 1"),
    (_dataset(categories=[{"id": 1, "name": "x"}, {"id": 2, "name": "x"}], annotations=[]), "'x' appears twice"),
])
def test_bad_input_is_named(tmp_path, data, message):
    p = tmp_path / "bad.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ValueError, match=message) as e:
        read_coco(p)
    assert str(p) in str(e.value)


def test_unknown_class_for_model_is_named(tmp_path):
    ls = read_coco(_write(tmp_path, _dataset()))
    with pytest.raises(ValueError, match=r"classes \['shelter'\] are not among the model's classes \['bunker'\]"):
        ls.remap(["bunker"])
