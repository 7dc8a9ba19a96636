import pickle

import pytest

torch = pytest.importorskip("torch")

from detector.spec import SPEC_KEY, ModelSpec  # noqa: E402
from detector.train.checkpoint import (load_checkpoint, read_checkpoint, set_class_thresholds,  # noqa: E402
                                       set_score_threshold)
from detector.train.models import build_model  # noqa: E402


def _ckpt(tmp_path, spec):
    model = build_model(spec)
    path = tmp_path / "m.ckpt"
    torch.save({SPEC_KEY: spec.to_json(), "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_threshold_is_stored_in_the_spec(tmp_path):
    spec = ModelSpec(arch="fcos_lite", classes=("a", "b"))
    path = _ckpt(tmp_path, spec)
    set_score_threshold(path, 0.61234)
    model, again = load_checkpoint(path)
    assert again.score_threshold == pytest.approx(0.612) and again.classes == ("a", "b")


def test_class_thresholds_are_stored_in_the_spec(tmp_path):
    spec = ModelSpec(arch="fcos_lite", classes=("a", "b"))
    path = _ckpt(tmp_path, spec)
    set_score_threshold(path, 0.5)
    set_class_thresholds(path, [0.25, 0.75], out=tmp_path / "cal.ckpt")
    assert load_checkpoint(path)[1].class_thresholds is None  # the source is left as it was
    again = load_checkpoint(tmp_path / "cal.ckpt")[1]
    assert again.class_thresholds == (0.25, 0.75) and again.score_threshold == 0.5
    assert list(again.thresholds()) == [0.25, 0.75]
    with pytest.raises(ValueError, match="class_thresholds"):
        set_class_thresholds(path, [0.25, 0.75, 0.5])  # one per class
    set_class_thresholds(tmp_path / "cal.ckpt", None)
    assert load_checkpoint(tmp_path / "cal.ckpt")[1].class_thresholds is None


class Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="evil.ckpt: not a loadable checkpoint"):
        read_checkpoint(path)


def test_checkpoint_without_spec_is_named(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="plain.ckpt: checkpoint has no 'revet_spec'"):
        load_checkpoint(path)
