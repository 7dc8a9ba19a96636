"""Training options have one home (detector.train.config): every TrainConfig field is a YAML key
and a `revet train` flag with the same name, type rules and help; flags override the YAML."""
import dataclasses

import pytest
import yaml

from detector.cli import build_parser
from detector.cli_args import EXIT_USAGE
from detector.train.config import FIELDS, TrainConfig, config_from_file, flag_overrides


def _overrides(argv):
    return flag_overrides(build_parser().parse_args(["train", *argv]))


def test_every_option_is_a_flag_with_help():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    dests = {a.dest: a for a in train._actions}
    for name, f in FIELDS.items():
        assert name in dests, f"TrainConfig.{name} has no revet train flag"
        assert f"--{name.replace('_', '-')}" in dests[name].option_strings
        assert f.metadata["help"] and dests[name].help.startswith(f.metadata["help"])
    assert "extra" not in FIELDS  # retired: it was read by nothing


def test_flags_parse_to_the_fields_types():
    o = _overrides(["--train", "t.json", "--val", "v.json", "--bands", "3,2,1", "--classes", "bunker,shelter",
                    "--save-at-minutes", "1,2.5", "--augment", "{hue: 0.05, scale: [0.8, 1.25]}",
                    "--no-photometric", "--balance", "--devices", "2", "--val-every", "4", "--crop", "224",
                    "--model", "fcos_lite", "--workers", "1", "--threads", "2"])
    cfg = config_from_file(None, o)
    assert cfg.bands == [3, 2, 1] and cfg.classes == ["bunker", "shelter"] and cfg.save_at_minutes == [1.0, 2.5]
    assert cfg.augment == {"hue": 0.05, "scale": [0.8, 1.25]}
    assert cfg.photometric is False and cfg.balance is True and cfg.devices == 2 and cfg.val_every == 4
    assert cfg.crop == 224 and cfg.arch == "fcos_lite" and cfg.num_workers == 1 and cfg.threads == 2
    assert _overrides(["--devices", "auto"])["devices"] == "auto"


def test_flags_override_the_yaml_and_omitted_flags_leave_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": "t.json", "val": "v.json", "photometric": False, "lr": 1e-3,
                                 "augment": {"blur": 0.1}, "epochs": 7}))
    cfg = config_from_file(p, _overrides(["--lr", "5e-4", "--photometric"]))
    assert cfg.lr == 5e-4 and cfg.photometric is True  # given: the flag wins
    assert cfg.epochs == 7 and cfg.augment == {"blur": 0.1}  # not given: the YAML's
    defaults = config_from_file(None, _overrides(["--train", "t.json", "--val", "v.json"]))
    assert defaults == TrainConfig(train="t.json", val="v.json")


@pytest.mark.parametrize("argv,words", [
    (["--epochs", "abc"], ["--epochs", "int", "'abc'"]),
    (["--bands", "3,x"], ["--bands", "int", "'x'"]),
    (["--augment", "[1, 2]"], ["--augment", "mapping"]),
    (["--nonsense", "1"], ["unrecognized", "--nonsense"]),
])
def test_bad_flags_are_usage_errors_naming_the_flag(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", *argv])
    err = capsys.readouterr().err
    assert e.value.code == EXIT_USAGE and all(w in err for w in words), err


def test_an_older_runs_config_with_the_retired_extra_key_still_resumes(tmp_path):
    p = tmp_path / "config.yaml"
    old = {**dataclasses.asdict(TrainConfig(train="t.json", val="v.json")), "extra": {}}
    p.write_text(yaml.safe_dump(old))
    assert config_from_file(p, {}) == TrainConfig(train="t.json", val="v.json")
    p.write_text(yaml.safe_dump({**old, "extra": {"mosaic": True}}))
    with pytest.raises(ValueError, match="'extra' is no longer read"):
        config_from_file(p, {})
