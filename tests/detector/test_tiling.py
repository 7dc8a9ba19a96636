import numpy as np

from detector import tiling


def test_windows_cover_scene_and_stay_inside():
    for size in (512, 600, 1000, 2048, 2049):
        starts = tiling.window_starts(size, 512, 128)
        assert starts[0] == 0 and starts[-1] + 512 == size
        assert all(b - a <= 384 for a, b in zip(starts, starts[1:]))
    assert tiling.window_starts(300, 512, 128) == [0]  # smaller than a tile: one padded window


def test_truncated_only_on_interior_edges():
    boxes = np.array([[0, 10, 20, 30], [500, 10, 512, 30], [100, 100, 200, 200]], np.float32)
    # window at the scene's left/top edge, scene wider than the window
    t = tiling.truncated_mask(boxes, 0, 0, 512, 1000, 512)
    assert t.tolist() == [False, True, False]


def test_merge_prefers_whole_object_over_cut_piece():
    # The same object seen whole in window 1 and cut by window 0's right edge.
    boxes = np.array([[480, 100, 512, 140], [470, 100, 530, 140]], np.float32)
    scores = np.array([0.9, 0.6], np.float32)
    labels = np.array([0, 0])
    keep = tiling.merge_windows(boxes, scores, labels, np.array([0, 1]), np.array([True, False]))
    assert keep.tolist() == [1]


def test_merge_keeps_neighbours_and_same_window_boxes():
    boxes = np.array([[0, 0, 40, 40], [45, 0, 85, 40], [0, 0, 40, 40]], np.float32)
    keep = tiling.merge_windows(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]),
                                np.array([0, 1, 1]), np.zeros(3, bool))
    assert sorted(keep.tolist()) == [0, 1, 2]  # disjoint, or different class


def test_valid_fraction_counts_pixel_centres_in_each_box():
    valid = np.ones((10, 20), bool)
    valid[:, :5] = False  # columns 0-4 no data
    boxes = np.array([[0, 0, 10, 10],      # half on nodata
                      [5, 0, 20, 10],      # all valid
                      [0, 0, 4, 4],        # all nodata
                      [3.6, 2, 7.4, 3],    # pixel centres 4.5, 5.5, 6.5 -> columns 4, 5, 6: 2 of 3 valid
                      [18, 8, 40, 30],     # clipped to the mask: columns 18-19, rows 8-9
                      [7, 7, 7, 9]],       # no area
                     np.float32)
    f = tiling.valid_fraction(boxes, valid)
    np.testing.assert_allclose(f, [0.5, 1.0, 0.0, 2 / 3, 1.0, 0.0])
    assert tiling.valid_fraction(np.zeros((0, 4), np.float32), valid).shape == (0,)
