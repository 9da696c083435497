"""bench/redshift_async_study.py's command line: --quick picks the tiny model without overriding --n."""
import pytest

from bench.redshift_async_study import parse_args

pytestmark = pytest.mark.unit

TINY = ["data.bands=450", "data.n_classes=40", "data.snr=20.0", "model.learning_rate=0.001"]


def test_quick_keeps_an_explicit_sample_count():
    args = parse_args(["--quick", "--n", "12000"])
    assert args.n == 12000 and args.set == TINY


def test_sample_count_defaults():
    assert parse_args(["--quick"]).n == 1500
    assert parse_args([]).n == 15000 and parse_args([]).set == []


def test_quick_settings_come_before_the_callers():
    assert parse_args(["--quick", "--set", "data.bands=30"]).set == TINY + ["data.bands=30"]
