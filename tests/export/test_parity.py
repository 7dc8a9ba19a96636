"""export.onnx_export.match_detections: what parity excuses (near-tied NMS order) and what it
does not (a box that moved, a missing box with no tied rival)."""
import numpy as np

from detector.export.onnx_export import match_detections


def dets(boxes, scores, labels):
    """One tile's fixed output with an empty slot (score 0) at the end: not full, so no
    detection is excused as cut at the last slot."""
    return (np.array(boxes + [[0, 0, 0, 0]], np.float32), np.array(scores + [0], np.float32),
            np.array(labels + [0], np.int64))


A = [10, 10, 50, 50]
B = [14, 12, 54, 52]  # IoU with A about 0.75: above NMS 0.5, below the match IoU 0.9
FAR = [200, 200, 240, 240]


def test_identical_outputs_match():
    a = dets([A, FAR], [0.8, 0.6], [0, 1])
    pairs, missing, swapped = match_detections(a, a)
    assert pairs == [(0, 0), (1, 1)] and missing == [] and swapped == []


def test_nms_swap_between_tied_scores_is_excused():
    # a kept A and suppressed B; b, with the scores tied to 1e-7, kept B and suppressed A
    a = dets([A, FAR], [0.70000001, 0.6], [0, 1])
    b = dets([B, FAR], [0.70000005, 0.6], [0, 1])
    pairs, missing, swapped = match_detections(a, b)
    assert pairs == [(1, 1)] and missing == [] and swapped == [0]


def test_a_rival_with_a_distinct_score_is_not_a_tie():
    a = dets([A], [0.7], [0])
    b = dets([B], [0.65], [0])
    _, missing, swapped = match_detections(a, b)
    assert missing == [0] and swapped == []


def test_a_rival_of_another_class_or_far_away_is_not_a_tie():
    a = dets([A], [0.7], [0])
    for b in (dets([B], [0.7], [1]), dets([FAR], [0.7], [0])):
        _, missing, swapped = match_detections(a, b)
        assert missing == [0] and swapped == []
