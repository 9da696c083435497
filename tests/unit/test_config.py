"""Config loader: typed dataclasses from YAML + presets + `--set`, unknown and missing keys rejected."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import yaml

from conf import CONF_DIR, ClusterConfig, ConfigError, dump, load, load_cluster
from conf.loader import build, parse_override
from jobs.runner import parse_args
from jobs.smoke import SmokeConfig

pytestmark = pytest.mark.unit

SMOKE = CONF_DIR / "smoke.yaml"
CLUSTER_KEYS = [f.name for f in dataclasses.fields(ClusterConfig)]


def _smoke_tree() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def _write(tmp_path, tree: dict, name: str = "case.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree))
    return path


def test_real_files_load_into_typed_config():
    cfg = load(SmokeConfig, SMOKE)
    raw, cluster_raw = _smoke_tree(), yaml.safe_load((CONF_DIR / "cluster.yaml").read_text())
    assert isinstance(cfg, SmokeConfig) and isinstance(cfg.cluster, ClusterConfig)
    assert cfg.roles.ps == raw["roles"]["ps"] and cfg.roles.workers == raw["roles"]["workers"]
    assert cfg.feed.records == raw["feed"]["records"]
    assert cfg.cluster.workers == cluster_raw["workers"] and cfg.cluster.host == cluster_raw["host"]
    # YAML ints land in float fields as floats
    assert isinstance(cfg.cluster.start_timeout_s, float) and isinstance(cfg.feed.feed_timeout_s, float)
    assert cfg.executors() == raw["roles"]["ps"] + raw["roles"]["workers"]


def test_every_preset_of_the_real_file_loads():
    for preset in _smoke_tree()["presets"]:
        assert isinstance(load(SmokeConfig, SMOKE, preset), SmokeConfig)


def test_overrides_are_parsed_as_typed_values():
    cfg = load(SmokeConfig, SMOKE, overrides=["feed.records=123", "feed.feed_timeout_s=2.5",
                                               "cluster.workers=2", "cluster.worker_memory=4"])
    assert cfg.feed.records == 123 and type(cfg.feed.records) is int
    assert cfg.feed.feed_timeout_s == 2.5
    assert cfg.cluster.workers == 2          # nested override into the cluster section
    assert cfg.cluster.worker_memory == "4"  # a number given to a str field stays a string
    assert load(SmokeConfig, SMOKE, overrides=["feed.feed_timeout_s=7"]).feed.feed_timeout_s == 7.0


@pytest.mark.parametrize("text, path, value", [
    ("a.b=3", ["a", "b"], 3), ("x=2.5", ["x"], 2.5), ("x=[1, 2]", ["x"], [1, 2]),
    ("x=true", ["x"], True), ("x=false", ["x"], False), ("x=hello", ["x"], "hello"),
    ("x=", ["x"], ""), ("x=a=b", ["x"], "a=b"),
])
def test_parse_override(text, path, value):
    got_path, got = parse_override(text)
    assert got_path == path and got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["novalue", "=3", " =3"])
def test_malformed_override_is_rejected(text):
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(text)


@dataclass
class _Train:
    epochs: int
    lr: float
    layers: list[int]
    shuffle: bool
    note: str | None = None


@dataclass
class _Case:
    cluster: ClusterConfig
    train: _Train


def test_list_bool_and_optional_fields_from_set_strings(tmp_path):
    train = {"epochs": 1, "lr": 0.1, "layers": [8], "shuffle": False, "note": "x"}
    case = _write(tmp_path, {"train": train})
    cfg = load(_Case, case, overrides=["train.layers=[4, 5, 6]", "train.shuffle=true", "train.lr=0.001",
                                        "train.note=null"])
    assert cfg.train.layers == [4, 5, 6] and cfg.train.shuffle is True
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.note is None
    assert load(_Case, case, overrides=["train.note=3"]).train.note == "3"
    with pytest.raises(ConfigError, match=r"config\.train\.layers\[1\]"):
        load(_Case, case, overrides=["train.layers=[1, x]"])
    with pytest.raises(ConfigError, match=r"config\.train\.layers: expected a list"):
        load(_Case, case, overrides=["train.layers=4"])
    with pytest.raises(ConfigError, match=r"config\.train\.shuffle.*true or false"):
        load(_Case, case, overrides=["train.shuffle=maybe"])


def test_unknown_top_level_key_lists_valid_keys(tmp_path):
    case = _write(tmp_path, {**_smoke_tree(), "extra": 1})
    with pytest.raises(ConfigError) as err:
        load(SmokeConfig, case)
    msg = str(err.value)
    assert "extra" in msg and "valid keys: cluster, roles, feed" in msg


def test_unknown_key_inside_a_section_lists_valid_keys(tmp_path):
    tree = _smoke_tree()
    tree["feed"]["batchsize"] = 10
    with pytest.raises(ConfigError) as err:
        load(SmokeConfig, _write(tmp_path, tree))
    msg = str(err.value)
    assert "config.feed" in msg and "batchsize" in msg
    assert "valid keys: records, partitions, epochs, batch_size, feed_timeout_s" in msg


def test_unknown_key_inside_cluster_lists_valid_keys(tmp_path):
    cluster = _write(tmp_path, {**yaml.safe_load((CONF_DIR / "cluster.yaml").read_text()), "wrokers": 2},
                     "cluster.yaml")
    for call in (lambda: load(SmokeConfig, SMOKE, cluster_file=cluster),
                 lambda: load(SmokeConfig, SMOKE, overrides=["cluster.wrokers=2"])):
        with pytest.raises(ConfigError) as err:
            call()
        assert "wrokers" in str(err.value) and ", ".join(CLUSTER_KEYS) in str(err.value)


def test_missing_key_is_named(tmp_path):
    tree = _smoke_tree()
    del tree["feed"]["batch_size"]
    with pytest.raises(ConfigError, match=r"config\.feed: missing key 'batch_size'"):
        load(SmokeConfig, _write(tmp_path, tree))
    del tree["roles"]
    with pytest.raises(ConfigError, match="missing key 'roles'"):
        load(SmokeConfig, _write(tmp_path, tree))


@pytest.mark.parametrize("override, where", [
    ("feed.records=many", r"config\.feed\.records"),
    ("feed.records=true", r"config\.feed\.records"),
    ("feed.epochs=1.5", r"config\.feed\.epochs"),
    ("cluster.master_port=[1]", r"config\.cluster\.master_port"),
    ("roles=3", r"config\.roles: expected a section"),
])
def test_wrong_type_names_the_dotted_path(override, where):
    with pytest.raises(ConfigError, match=where):
        load(SmokeConfig, SMOKE, overrides=[override])


def test_section_given_a_scalar_is_an_error(tmp_path):
    tree = _smoke_tree()
    tree["feed"] = 3
    with pytest.raises(ConfigError, match=r"config\.feed: expected a section"):
        load(SmokeConfig, _write(tmp_path, tree))


def test_validate_runs_after_build():
    with pytest.raises(ConfigError, match="at least one ps"):
        load(SmokeConfig, SMOKE, overrides=["roles.ps=0"])


def test_preset_merges_and_unknown_preset_lists_presets(tmp_path):
    tree = {**_smoke_tree(), "presets": {"tiny": {"feed": {"records": 7}}, "paper": {}}}
    case = _write(tmp_path, tree)
    cfg = load(SmokeConfig, case, "tiny")
    assert cfg.feed.records == 7 and cfg.feed.partitions == tree["feed"]["partitions"]
    assert load(SmokeConfig, case, "tiny", ["feed.records=9"]).feed.records == 9  # --set beats the preset
    with pytest.raises(ConfigError) as err:
        load(SmokeConfig, case, "huge")
    msg = str(err.value)
    assert "huge" in msg and str(case) in msg
    assert sorted(msg.split("presets: ")[1].split(", ")) == ["paper", "tiny"]


@pytest.mark.parametrize("override, section", [("feed.records.x=1", "feed.records"),
                                               ("nosuch.x=1", "nosuch"),
                                               ("cluster.host.a.b=1", "cluster.host")])
def test_set_through_a_non_section_is_rejected(override, section):
    with pytest.raises(ConfigError, match=rf"'{section}' is not a section"):
        load(SmokeConfig, SMOKE, overrides=[override])


def test_bad_yaml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("feed: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load(SmokeConfig, bad)
    with pytest.raises(ConfigError, match="nope.yaml"):
        load(SmokeConfig, tmp_path / "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="scalar.yaml.*mapping"):
        load(SmokeConfig, scalar)


def test_dump_round_trips():
    cfg = load(SmokeConfig, SMOKE, overrides=["feed.records=77", "cluster.workers=2"])
    text = dump(cfg, case="smoke", preset=None)
    tree = yaml.safe_load(text)
    assert list(tree)[:2] == ["case", "preset"]  # extra keys go first
    tree.pop("case"), tree.pop("preset")
    assert build(SmokeConfig, tree) == cfg
    assert build(SmokeConfig, yaml.safe_load(dump(cfg))) == cfg


def test_load_cluster_with_overrides(tmp_path):
    base = load_cluster()
    cfg = load_cluster(["workers=5", "master_port=7100", "start_timeout_s=3"])
    assert (cfg.workers, cfg.master_port, cfg.start_timeout_s) == (5, 7100, 3.0)
    assert cfg.host == base.host
    with pytest.raises(ConfigError) as err:
        load_cluster(["bogus=1"])
    assert str(err.value).startswith("cluster:") and "bogus" in str(err.value)
    with pytest.raises(ConfigError, match=r"cluster\.workers"):
        load_cluster(["workers=three"])


def test_job_arguments_contract():
    args = parse_args("smoke", ["--preset", "tiny", "--set", "feed.records=5", "--set", "cluster.workers=2",
                                "--output", "file:///tmp/x", "--master", "spark://127.0.0.1:7077"])
    assert args.preset == "tiny" and args.set == ["feed.records=5", "cluster.workers=2"]
    assert args.output == "file:///tmp/x" and args.master == "spark://127.0.0.1:7077"
    defaults = parse_args("smoke", [])
    assert defaults.config == str(SMOKE) and defaults.set == [] and defaults.master is None
    assert defaults.output == "outputs/smoke" and defaults.preset is None
    assert parse_args("smoke", []).set == []  # the append default is not shared between calls
    with pytest.raises(SystemExit):
        parse_args("smoke", ["--unknown"])


@pytest.mark.parametrize("case", ["redshift", "landcover", "domst"])
def test_negative_checkpoint_interval_is_rejected(case):
    from jobs.domst import DomstConfig
    from jobs.landcover import LandcoverConfig
    from jobs.redshift_config import RedshiftConfig
    schema = {"redshift": RedshiftConfig, "landcover": LandcoverConfig, "domst": DomstConfig}[case]
    load(schema, CONF_DIR / f"{case}.yaml", "tiny", ["train.checkpoint_every=0"])
    with pytest.raises(ConfigError, match="train.checkpoint_every"):
        load(schema, CONF_DIR / f"{case}.yaml", "tiny", ["train.checkpoint_every=-1"])
