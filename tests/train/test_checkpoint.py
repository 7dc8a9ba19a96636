import pickle

import pytest

torch = pytest.importorskip("torch")

from detector.spec import SPEC_KEY, ModelSpec  # noqa: E402
from detector.train.checkpoint import load_checkpoint, read_checkpoint, set_score_threshold  # noqa: E402
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
