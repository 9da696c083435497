"""The model registry: one build(name, cfg, place) for the three studies; a placement goes only to
models split into units."""
import contextlib

import pytest

from models import registry
from tests.unit.test_domst_model import SMALL as DOMST
from tests.unit.test_landcover_model import TINY as LANDCOVER
from tests.unit.test_redshift_model import cfg as redshift_cfg

pytestmark = pytest.mark.unit


def _recorder():
    seen = []

    def place(unit):
        seen.append(unit)
        return contextlib.nullcontext()
    return place, seen


def test_the_split_models_take_a_placement_and_put_each_unit_through_it():
    assert registry.placeable() == ["domst", "landcover-units"]
    place, seen = _recorder()
    units = registry.build("landcover-units", LANDCOVER, place)
    assert seen == ["variables"] and {"rgb_b1_conv", "softmax"} <= set(units)
    place, seen = _recorder()
    registry.build("domst", DOMST, place)
    assert {f"head:{k}" for k in range(DOMST["k_groups"])} | {"temporal"} <= set(seen)


@pytest.mark.parametrize("name, cfg", [("redshift", redshift_cfg()), ("domst-singlehead-p", DOMST)])
def test_a_placement_for_a_model_with_no_units_is_refused_by_name(name, cfg):
    with pytest.raises(ValueError, match=rf"model '{name}' has no units to place; models that do: domst, "
                                         r"landcover-units"):
        registry.build(name, cfg, lambda unit: contextlib.nullcontext())
