"""A spec serialises with its family: ``spec_to_config`` / ``spec_from_config``."""

import json

import pytest

from keras_resnext import families
from helpers import FIXTURE_FAMILIES
from helpers import load_fixture_config

REGISTRY = sorted(families.registry())


@pytest.mark.parametrize("name", REGISTRY)
def test_every_registered_spec_round_trips_through_json(name):
    entry = families.get_entry(name)
    config = families.spec_to_config(entry.spec)
    assert config["family"] == entry.family.NAME
    restored = families.spec_from_config(json.loads(json.dumps(config)))
    assert type(restored) is type(entry.spec)
    assert restored == entry.spec


@pytest.mark.parametrize("name", sorted(FIXTURE_FAMILIES))
def test_fixture_specs_round_trip(name):
    family = families.families()[FIXTURE_FAMILIES[name]]
    spec = family.Spec.from_config(load_fixture_config(name))
    assert families.spec_from_config(
        json.loads(json.dumps(families.spec_to_config(spec)))) == spec
    # timm's argument names are read through the family's own from_config.
    assert families.spec_from_config(
        {"family": family.NAME, **load_fixture_config(name)}) == spec


def test_config_holds_every_field_as_json_types():
    spec = families.get_spec("resnest50d_4s2x40d")
    config = families.spec_to_config(spec)
    assert config["depths"] == [3, 4, 6, 3] and config["radix"] == 4
    assert json.loads(json.dumps(config)) == config


def test_unknown_family_names_it_and_the_known_ones():
    with pytest.raises(ValueError) as e:
        families.spec_from_config({"family": "vit", "depths": [1]})
    message = str(e.value)
    assert "family='vit'" in message
    for name in families.families():
        assert name in message


@pytest.mark.parametrize("config", [{"depths": [1, 1]}, ["resnet"], None])
def test_config_without_family_is_refused(config):
    with pytest.raises(ValueError, match="'family' key names its family"):
        families.spec_from_config(config)


def test_bad_field_is_the_family_error():
    config = families.spec_to_config(families.get_spec("resnet50"))
    config["stem_type"] = "odd"
    with pytest.raises(ValueError, match="stem_type"):
        families.spec_from_config(config)


def test_not_a_spec_is_refused():
    with pytest.raises(ValueError, match="family spec"):
        families.spec_to_config({"depths": (1,)})
