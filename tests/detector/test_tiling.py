import numpy as np
import pytest

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


def _join(boxes, scores, labels):
    return tiling.join_fragments(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(labels))


def test_collinear_fragments_of_a_long_shelter_become_one_box():
    # a 200 x 40 px shelter reported as two end-to-end pieces overlapping by 60 px (IoU 0.29)
    b, s, lab, src, n = _join([[100, 50, 230, 90], [170, 52, 300, 91]], [0.8, 0.9], [2, 2])
    assert len(b) == 1 and n.tolist() == [2] and lab.tolist() == [2]
    np.testing.assert_allclose(b[0], [100, 50, 300, 91])
    assert s[0] == pytest.approx(0.9) and src.tolist() == [1]  # the higher-scoring part leads


def test_a_piece_inside_the_whole_object_is_dropped_for_the_whole():
    # the piece scores higher than the whole box: the whole box is kept, with the piece's score
    b, s, _, _, n = _join([[10, 10, 60, 40], [0, 0, 200, 50]], [0.9, 0.7], [0, 0])
    np.testing.assert_allclose(b, [[0, 0, 200, 50]])
    assert s.tolist() == pytest.approx([0.9]) and n.tolist() == [2]


def test_distinct_neighbours_and_other_classes_stay_apart():
    boxes = [[0, 0, 200, 40], [0, 30, 200, 70],      # parallel shelters side by side: IoU 0.14
             [300, 0, 360, 60], [340, 5, 400, 65],   # two bunkers overlapping by a third: union not long
             [500, 0, 600, 40], [540, 0, 640, 40]]   # collinear, but of other classes
    b, _, lab, _, n = _join(boxes, [0.9, 0.8, 0.9, 0.8, 0.9, 0.8], [2, 2, 0, 0, 1, 2])
    assert len(b) == 6 and n.tolist() == [1] * 6


def test_three_pieces_join_over_rounds_and_nothing_is_lost():
    b, _, _, _, n = _join([[0, 0, 120, 40], [90, 0, 210, 40], [180, 0, 300, 40]], [0.9, 0.8, 0.7], [1, 1, 1])
    np.testing.assert_allclose(b, [[0, 0, 300, 40]])
    assert n.tolist() == [3]
    assert len(_join(np.zeros((0, 4)), [], [])[0]) == 0


def test_boxes_below_the_operating_threshold_are_left_as_the_model_gave_them():
    # a confident piece inside a weak whole box, and a weak fragment beside a confident one
    boxes = np.array([[10, 10, 60, 40], [0, 0, 200, 50], [300, 50, 430, 90], [370, 52, 500, 91]], np.float32)
    scores = np.array([0.9, 0.2, 0.8, 0.3], np.float32)
    b, s, _, src, n = tiling.join_fragments(boxes, scores, np.zeros(4, int), min_score=0.5)
    assert len(b) == 4 and n.tolist() == [1] * 4
    np.testing.assert_allclose(b, boxes[src])
    assert s.tolist() == pytest.approx(sorted(scores.tolist(), reverse=True))
    # the same boxes all above the floor join into two
    assert len(tiling.join_fragments(boxes, scores, np.zeros(4, int), min_score=0.1)[0]) == 2


def test_one_class_per_ground_keeps_the_best_class_and_records_the_runner_up():
    # 0: shelter 0.9 and 1: bunker 0.4 on the same ground; 2: revetment 0.8 alone; 3: bunker 0.6
    # overlapping 0 only a little (IoU < 0.5): kept
    boxes = np.array([[0, 0, 40, 20], [1, 0, 40, 21], [100, 100, 130, 130], [35, 0, 75, 20]], np.float32)
    scores = np.array([0.9, 0.4, 0.8, 0.6], np.float32)
    labels = np.array([2, 0, 1, 0])
    keep, ru = tiling.one_class_per_ground(boxes, scores, labels, iou=0.5)
    assert keep.tolist() == [0, 2, 3]
    assert ru.tolist() == [1, -1, -1]


def test_one_class_per_ground_is_greedy_and_a_dropped_box_suppresses_nothing():
    # a chain: 0 (0.9) covers 1 (0.8), 1 covers 2 (0.7), 0 does not cover 2: 2 stays
    boxes = np.array([[0, 0, 20, 20], [4, 0, 24, 20], [9, 0, 29, 20]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep, ru = tiling.one_class_per_ground(boxes, scores, np.array([0, 1, 1]), iou=0.5)
    assert tiling.box_iou(boxes[:1], boxes[2:])[0, 0] < 0.5 <= tiling.box_iou(boxes[1:2], boxes[2:])[0, 0]
    assert keep.tolist() == [0, 2] and ru.tolist() == [1, -1]
    # same-class twins are dropped too, but the runner-up names only another class
    keep, ru = tiling.one_class_per_ground(boxes[:2], scores[:2], np.array([0, 0]), iou=0.5)
    assert keep.tolist() == [0] and ru.tolist() == [-1]
    keep, ru = tiling.one_class_per_ground(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert keep.tolist() == [] and ru.tolist() == []
