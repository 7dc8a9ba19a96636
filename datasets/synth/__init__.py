"""The procedural synthetic generator (pretraining data, tests, benchmarks). Torch-free.

Modules, by stage of one rendered image:

- :mod:`~detector.datasets.synth.style`: seasons, sun, haze, sensor looks, and ``Style`` (how
  widely each is drawn; ``Style.varied()``, held-out styles);
- :mod:`~detector.datasets.synth.terrain`: backgrounds: grass, soil, rock, field patchworks,
  forest crowns, roads and tracks, palettes;
- :mod:`~detector.datasets.synth.objects`: targets (bunkers, revetments, shelters), hard
  negatives (houses, tanks, ponds, dykes, ...) and their placement (layout) at real size in metres;
- :mod:`~detector.datasets.synth.render`: height + albedo -> shaded, shadowed, hazy image;
- :mod:`~detector.datasets.synth.geo`: the CRS and geotransforms (pixel sizes in metres);
- :mod:`~detector.datasets.synth.scene`: one image from a plan, tiles, the large scene,
  ``generate_dataset`` (GeoTIFFs + COCO + scene GeoJSON);
- :mod:`~detector.datasets.synth.pairs`: two dates of one ground with construction between them
  (``revet synth --pairs``, docs/sites.md).

The command line is ``revet synth`` (docs/synth.md). The names below are the public ones.
"""
from detector.datasets.synth.geo import CRS, scene_transform
from detector.datasets.synth.scene import (CLASSES, SPLITS, draw_boxes, generate_dataset, render_image, render_tile,
                                           scene_seed, tile_seed, tile_transform, to_multiband16, write_geotiff,
                                           write_geotiff16, write_scene_geojson)
from detector.datasets.synth import terrain as st  # noqa: F401  (synth.st, as before)

__all__ = ["CLASSES", "CRS", "SPLITS", "draw_boxes", "generate_dataset", "render_image", "render_tile",
           "scene_seed", "scene_transform", "tile_seed", "tile_transform", "to_multiband16", "write_geotiff",
           "write_geotiff16", "write_scene_geojson"]
