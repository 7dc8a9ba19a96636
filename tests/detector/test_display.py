"""The one class palette (detector.display.CLASS_COLOURS) is what every picture, style and page uses."""
import re

import numpy as np

from detector.display import CLASS_COLOURS, class_colour
from detector.styles import detection_qml

CLASSES = ("bunker", "revetment", "shelter")


def test_qgis_style_colours_each_class_with_the_palette():
    qml = detection_qml(CLASSES)
    outlines = re.findall(r'name="outline_color" type="QString" value="(\d+),(\d+),(\d+),255"', qml)
    assert [tuple(map(int, o)) for o in outlines] == [class_colour(i) for i in range(3)]
    # more classes than colours: cycled, never an error
    assert class_colour(len(CLASS_COLOURS) + 1) == CLASS_COLOURS[1]


def test_synth_previews_draw_classes_in_the_palette():
    from detector.datasets.synth import draw_boxes

    img = np.zeros((64, 64, 3), np.uint8)
    im = np.asarray(draw_boxes(img, np.array([[4, 4, 30, 30], [34, 34, 60, 60]]), [1, 2]))
    assert tuple(im[20, 4]) == class_colour(1) and tuple(im[50, 34]) == class_colour(2)


def test_quicklook_and_review_page_use_the_same_palette():
    from detector import quicklook
    from pathlib import Path

    assert quicklook.COLOURS is CLASS_COLOURS
    js = (Path(__import__("detector.review", fromlist=["x"]).__file__).parent / "static" / "app.js").read_text()
    assert "DATA.palette" in js and "[255, 60, 60]" not in js  # no second copy of the palette in the page
