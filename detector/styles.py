"""QGIS layer styles for detection outputs. Torch-free, standard library only.

A vector output is coloured by a *categorized* renderer on one attribute: ``class`` for
detections (the class colours of :data:`detector.quicklook.COLOURS`, in label order) and
``review_status`` for review decisions (:data:`REVIEW_COLOURS`). The style is written twice:

- a ``.qml`` sidecar next to the file (``scene.geojson`` -> ``scene.qml``), which QGIS loads
  automatically when it opens a layer of the same base name;
- inside a GeoPackage, as a row of the ``layer_styles`` table (the table QGIS itself creates
  with "Save style -> In database"), marked ``useAsDefault`` so QGIS applies it on open.

The QML holds each symbol property both as ``<Option>`` maps (QGIS >= 3.26) and ``<prop>``
elements (older 3.x), as QGIS itself writes them.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from xml.sax.saxutils import quoteattr

# One palette: a class is the same colour in quicklooks, the review page and QGIS.
from detector.display import CLASS_COLOURS  # noqa: E402
# review_status -> (colour, outline style)
REVIEW_COLOURS = {
    "accepted": ((40, 200, 80), "solid"),
    "relabelled": ((255, 150, 0), "solid"),
    "drawn": ((40, 140, 255), "solid"),
    "rejected": ((150, 150, 150), "dash"),
}


def _symbol(name: str, rgb: tuple[int, int, int], outline_style: str = "solid", width: float = 0.6) -> str:
    r, g, b = rgb
    props = {"color": f"{r},{g},{b},40", "outline_color": f"{r},{g},{b},255",
             "outline_style": outline_style, "outline_width": f"{width}", "outline_width_unit": "MM",
             "style": "solid", "joinstyle": "miter"}
    options = "".join(f'<Option name="{k}" type="QString" value={quoteattr(v)}/>' for k, v in props.items())
    legacy = "".join(f'<prop k="{k}" v={quoteattr(v)}/>' for k, v in props.items())
    return (f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
            f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>')


def categorized_qml(field: str, categories: list[tuple[str, tuple[int, int, int], str]],
                    *, label_field: str | None = None) -> str:
    """A QGIS QML document: polygons coloured by the value of ``field``.

    ``categories``: ``(value, (r, g, b), outline_style)`` per category; ``outline_style`` is a
    QGIS pen style name (``solid``, ``dash``). ``label_field``: an attribute drawn as a label.
    """
    cats = "".join(f'<category render="true" symbol="{i}" value={quoteattr(v)} label={quoteattr(v)}/>'
                   for i, (v, _, _) in enumerate(categories))
    syms = "".join(_symbol(str(i), rgb, style) for i, (_, rgb, style) in enumerate(categories))
    labeling = ""
    if label_field:
        labeling = (f'<labeling type="simple"><settings calloutType="simple">'
                    f'<text-style fieldName={quoteattr(label_field)} fontSize="8" textColor="255,255,255,255" '
                    f'isExpression="0"><text-buffer bufferDraw="1" bufferSize="0.7" bufferColor="0,0,0,255"/>'
                    f'</text-style><placement placement="1"/></settings></labeling>')
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="Symbology|Labeling">\n'
            f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
            f'enableorderby="0" forceraster="0"><categories>{cats}</categories><symbols>{syms}</symbols>'
            f'</renderer-v2>\n{labeling}\n<layerGeometryType>2</layerGeometryType>\n</qgis>\n')


def detection_qml(classes) -> str:
    """Detections coloured by ``class`` (label order = palette order), labelled with the class."""
    cats = [(c, CLASS_COLOURS[i % len(CLASS_COLOURS)], "solid") for i, c in enumerate(classes)]
    return categorized_qml("class", cats, label_field="class")


def review_qml() -> str:
    """Review decisions coloured by ``review_status``, labelled with ``reviewed_class``."""
    cats = [(s, rgb, style) for s, (rgb, style) in REVIEW_COLOURS.items()]
    return categorized_qml("review_status", cats, label_field="reviewed_class")


def qml_path(vector_path: str | os.PathLike) -> Path:
    """The sidecar QGIS looks for: same folder and base name, suffix ``.qml``."""
    p = Path(vector_path)
    return p.with_name(p.name.split(".")[0] + ".qml") if p.name.endswith(".coco.json") else p.with_suffix(".qml")


def write_qml(vector_path: str | os.PathLike, qml: str) -> Path:
    """Write ``qml`` as the sidecar of ``vector_path`` (atomically) and return its path."""
    from detector.outputs import atomic_write_text

    return atomic_write_text(qml_path(vector_path), qml)


LAYER_STYLES_SQL = """CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
    styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"""


def write_gpkg_style(gpkg: str | os.PathLike, layer: str, qml: str, *, name: str | None = None,
                     description: str = "Revet") -> None:
    """Store ``qml`` as the default style of ``layer`` in GeoPackage ``gpkg`` (table
    ``layer_styles``, registered in ``gpkg_contents`` as an attributes table, as QGIS does).
    A style of the same layer and name is replaced. Raises ValueError when ``layer`` is not a
    feature table of the file."""
    con = sqlite3.connect(str(gpkg))
    try:
        row = con.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?",
                          (layer,)).fetchone()
        if row is None:
            raise ValueError(f"{gpkg}: no feature layer {layer!r} to attach a style to")
        con.execute(LAYER_STYLES_SQL)
        con.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                    "VALUES ('layer_styles', 'attributes', 'layer_styles')")
        style = name or layer
        con.execute("DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (layer, style))
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, owner) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, 'revet')",
                    (layer, row[0], style, qml, description))
        con.commit()
    finally:
        con.close()


def style_output(path: str | os.PathLike, qml: str, *, layer: str | None = None) -> list[Path]:
    """Give one vector output its style: a ``.qml`` sidecar always, and for a GeoPackage also
    the ``layer_styles`` row of ``layer`` (default: the file's only feature layer). Returns the
    files written or changed."""
    path = Path(path)
    written = [write_qml(path, qml)]
    if path.suffix.lower() == ".gpkg":
        if layer is None:
            con = sqlite3.connect(str(path))
            try:
                layers = [r[0] for r in con.execute("SELECT table_name FROM gpkg_geometry_columns")]
            finally:
                con.close()
            if len(layers) != 1:
                raise ValueError(f"{path}: name the layer to style; feature layers are {layers}")
            layer = layers[0]
        write_gpkg_style(path, layer, qml)
        written.append(path)
    return written
