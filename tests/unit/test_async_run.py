"""The asynchronous ps/worker run spec: what redshift and land cover's data-parallel arm send their roles."""
import json

import pytest

from conf import ConfigError, from_json, to_json
from distributed.async_run import AsyncRun

pytestmark = pytest.mark.unit

REDSHIFT = AsyncRun(
    model_name="redshift", model={"variant": "thesis", "bands": 30, "n_classes": 3}, data="redshift-share",
    feed="tensorflow", shares=["file:///b/0", "file:///b/1"], share_sizes=[50, 50], data_uri=None, seed=5, workers=2,
    s=2, schedule="inverse", max_epochs=3, batch_size=16, update="epoch", stop_on=1, stopping_rule="keras3",
    tf_threads=1, push_timeout_s=60.0, ps_secret="ab" * 16, weights_uri="file:///w.h5", checkpoint_dir=None,
    checkpoint_every=0, resume=False, tensorboard_uri=None, sample_interval_s=0.0)


def test_the_spec_travels_as_json_and_comes_back_equal():
    assert from_json(AsyncRun, to_json(REDSHIFT)) == REDSHIFT


@pytest.mark.parametrize("change, message", [
    ({"shares": ["file:///b/0"]}, r"AsyncRun.shares: one share per worker \(2\)"),
    ({"feed": "spark", "share_sizes": None}, r"AsyncRun.share_sizes: one size per worker \(2\)"),
    ({"data": "landcover-patches", "data_uri": None}, "AsyncRun.data_uri: the patch set's URI is needed"),
    ({"stop_on": 3}, r"AsyncRun.stop_on: 3 is out of range"),
    ({"schedule": "linear"}, r"AsyncRun.schedule: 'linear' is not one of"),
])
def test_a_spec_the_roles_cannot_run_is_refused_where_it_is_read(change, message):
    text = json.dumps({**json.loads(to_json(REDSHIFT)), **change})
    with pytest.raises(ConfigError, match=message):
        from_json(AsyncRun, text)
