"""Bad training inputs give one clear line, before any work, and lose nothing already there."""
import pytest
import yaml

from detector.cli import main
from detector.train.fit import TrainConfig, config_from_file, train


@pytest.mark.parametrize("key,value,expected", [
    ("epochs", "abc", "int"), ("lr", float("nan"), "float"), ("batch_size", 8.5, "int"),
    ("photometric", "yes", "bool"), ("bands", [1, "2"], "list[int]"), ("augment", [1], "dict"),
])
def test_config_types_are_checked(tmp_path, key, value, expected):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": "t.json", "val": "v.json", key: value}))
    with pytest.raises(ValueError) as e:
        config_from_file(p, {})
    msg = str(e.value)
    assert str(p) in msg and repr(key) in msg and expected in msg


def test_config_types_accept_what_the_fields_declare(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": "t.json", "val": "v.json", "max_time": 5, "lr": 1e-3, "crop": None,
                                 "bands": [3, 2, 1], "devices": "auto", "save_at_minutes": [1, 2.5]}))
    cfg = config_from_file(p, {})
    assert cfg.max_time == 5 and cfg.bands == [3, 2, 1] and cfg.crop is None and cfg.devices == "auto"


def test_new_run_into_an_earlier_run_is_refused_and_keeps_its_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"earlier run")
    cfg = TrainConfig(train=str(tmp_path / "t.json"), val=str(tmp_path / "v.json"), out=str(run))
    with pytest.raises(ValueError, match="--resume.*--overwrite"):
        train(cfg)
    assert (run / "best.ckpt").read_bytes() == b"earlier run"
    rc = main(["train", "--train", cfg.train, "--val", cfg.val, "--out", str(run)])
    err = capsys.readouterr().err
    assert rc == 1 and str(run) in err and "earlier run" in err and "Traceback" not in err
    assert (run / "best.ckpt").read_bytes() == b"earlier run"


def test_tampered_last_ckpt_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(train=str(tmp_path / "t.json"), val=str(tmp_path / "v.json"), out=str(run))
    (run / "config.yaml").write_text(yaml.safe_dump({k: getattr(cfg, k) for k in ("train", "val", "out")}))
    (run / "last.ckpt").write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    rc = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert rc == 1 and f"{run / 'last.ckpt'}: not a readable training checkpoint" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (run / "last.ckpt").exists()
