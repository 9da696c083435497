"""Every number in a job's config has a declared range, checked by the loader with the key named, before
any cluster starts."""
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path
from typing import Annotated

import pytest

from conf import CONF_DIR, ConfigError, Range, load
from conf.loader import build
from jobs.domst import DomstConfig
from jobs.landcover import LandcoverConfig
from jobs.redshift_config import RedshiftConfig
from jobs.smoke import SmokeConfig
from jobs.spacetime import SpacetimeConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {"redshift": RedshiftConfig, "landcover": LandcoverConfig, "domst": DomstConfig, "smoke": SmokeConfig,
           "spacetime": SpacetimeConfig}


def numbers_without_range(schema, where="config"):
    """Dotted keys of int/float fields (also inside lists and optionals) that declare no Range."""
    out = []
    for name, hint in typing.get_type_hints(schema, include_extras=True).items():
        key = f"{where}.{name}"
        while typing.get_origin(hint) in (list, typing.Union, type(int | None)):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if dataclasses.is_dataclass(hint):
            out += numbers_without_range(hint, key)
        elif hint in (int, float):
            out.append(key)
    return out


@pytest.mark.parametrize("case", sorted(SCHEMAS))
def test_every_numeric_field_declares_its_range(case):
    assert numbers_without_range(SCHEMAS[case]) == []


@pytest.mark.parametrize("case, override, message", [
    ("redshift", "data.shard_size=0", "config.data.shard_size: 0 is out of range; it must be >= 1"),  # Count
    ("redshift", "data.sizes=[600, 0]", "config.data.sizes[1]: 0 is out of range; it must be >= 1"),  # list item
    ("redshift", "train.checkpoint_every=-1", "config.train.checkpoint_every: -1 is out of range; it must be >= 0"),
    ("redshift", "train.seed=-3", "config.train.seed: -3 is out of range; it must be >= 0 and <= 2.14748e+09"),
    ("redshift", "train.push_timeout_s=0", "config.train.push_timeout_s: 0.0 is out of range; it must be > 0"),
    ("redshift", "model.learning_rate=.nan", "config.model.learning_rate: nan is out of range; it must be > 0"),
    ("landcover", "model.dropout=1", "config.model.dropout: 1.0 is out of range; it must be >= 0 and < 1"),  # Rate
    ("landcover", "cluster.master_port=70000", "config.cluster.master_port: 70000 is out of range; it must be "
                                               ">= 0 and <= 65535"),                                       # Port
    ("domst", "data.train_frac=0", "config.data.train_frac: 0.0 is out of range; it must be > 0 and < 1"),
    ("domst", "placement.cpu_devices=0", "config.placement.cpu_devices: 0 is out of range; it must be >= 1"),
    ("domst", "data.start_year=99999", "config.data.start_year: 99999 is out of range; it must be >= 1800 and "
                                       "<= 2200"),
    ("spacetime", "mgrit.coarsening=1", "config.mgrit.coarsening: 1 is out of range; it must be >= 2"),
    ("spacetime", "experiments.processes=[1, 0]", "config.experiments.processes[1]: 0 is out of range; "
                                                  "it must be >= 1"),
    ("spacetime", "modelled.bandwidth_Bps=0", "config.modelled.bandwidth_Bps: 0.0 is out of range; it must be > 0"),
    ("smoke", "feed.feed_timeout_s=-1", "config.feed.feed_timeout_s: -1.0 is out of range; it must be > 0"),
])
def test_a_number_out_of_range_is_an_error_naming_its_key(case, override, message):
    with pytest.raises(ConfigError) as err:
        load(SCHEMAS[case], CONF_DIR / f"{case}.yaml", "tiny" if case != "smoke" else None, [override])
    assert message in str(err.value)


def test_bounds_themselves_follow_open_and_closed_ends():
    @dataclasses.dataclass
    class C:
        closed: Annotated[int, Range(1, 3)]
        half: Annotated[float, Range(0, 1, max_open=True)]
    assert build(C, {"closed": 1, "half": 0}) == C(1, 0.0) and build(C, {"closed": 3, "half": 0.5}) == C(3, 0.5)
    for bad in ({"closed": 0, "half": 0}, {"closed": 4, "half": 0}, {"closed": 2, "half": 1}):
        with pytest.raises(ConfigError, match="out of range"):
            build(C, bad)


def test_shard_size_zero_on_the_command_line_exits_2_naming_the_key_before_any_cluster(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "redshift.py"), "--preset", "tiny",
                           "--set", "data.shard_size=0", "--output", str(out),
                           "--set", f"cluster.run_dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == ("error: config.data.shard_size: 0 is out of range; "
                                                    "it must be >= 1")
    assert not out.exists() and not (tmp_path / "run").exists()   # no output, no cluster started
