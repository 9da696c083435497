"""Names from input or config that become path parts: refused with the file and the record named, and a
join never leaves its base."""
import json

import pytest

from models import landcover
from rdd_io import domst_read, storage
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit

META = {"format": "domst-watersheds/1", "precip_file": "precip/x.nc", "distance_file": "d.tif",
        "grid": {"n_lat": 2, "n_lon": 2},
        "watersheds": [{"id": "W01", "site_no": "06800000", "discharge_file": "discharge/a.rdb", "pixels": [0]},
                       {"id": "W02", "site_no": "06800001", "discharge_file": "discharge/b.rdb", "pixels": [1]}]}


def watersheds(record: int, key: str, value) -> bytes:
    meta = json.loads(json.dumps(META))
    (meta["watersheds"][record] if record >= 0 else meta)[key] = value
    return json.dumps(meta).encode()


@pytest.mark.parametrize("record, key, value, message", [
    (1, "id", "../../ESCAPED", "watersheds.json: watershed record 1: id '../../ESCAPED' is not a safe name"),
    (0, "id", "a/b", "watersheds.json: watershed record 0: id 'a/b' is not a safe name"),
    (1, "id", "..", "watershed record 1: id '..' is not a safe name"),
    (0, "id", "", "watershed record 0: id '' is not a safe name"),
    (1, "discharge_file", "../../../etc/passwd", "watersheds.json: watershed W02 (record 1): discharge_file "
                                                 "'../../../etc/passwd' is not a relative path of safe names"),
    (0, "discharge_file", "/etc/passwd", "watershed W01 (record 0): discharge_file '/etc/passwd'"),
    (-1, "precip_file", "../x.nc", "watersheds.json: precip_file: '../x.nc' is not a relative path"),
])
def test_unsafe_names_in_watersheds_json_are_refused_naming_file_and_record(record, key, value, message):
    with pytest.raises(SchemaError) as err:
        domst_read.read_watersheds(watersheds(record, key, value), "watersheds.json")
    assert message in str(err.value)


def test_safe_names_pass_and_an_integer_id_becomes_its_text():
    meta = domst_read.read_watersheds(watersheds(0, "id", 17), "watersheds.json")
    assert [s["id"] for s in meta["watersheds"]] == ["17", "W02"]


def test_a_placement_plan_name_that_would_escape_is_refused(tmp_path):
    from conf import CONF_DIR
    from conf.loader import read_yaml
    plans = read_yaml(CONF_DIR / "landcover_plans.yaml")
    with pytest.raises(ValueError, match=r"placement: plan name '\.\./\.\./x' is not a safe name"):
        landcover.check_plans({"../../x": plans["default"]}, "placement")


@pytest.mark.parametrize("part", ["..", "../x", "a/../../b", "a/./b", "."])
def test_join_never_leaves_its_base(part):
    with pytest.raises(ValueError, match="would leave /out"):
        storage.join("/out", "checkpoints", part)
    assert storage.join("/out", "a/b", "c.h5") == "/out/a/b/c.h5"
