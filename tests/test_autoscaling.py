"""vast_magic.autoscaling: merging, validation and change reasons (local defaults: backends/local/test_policy.py)."""
from __future__ import annotations

import dataclasses
import math

import pytest

from vast_magic.autoscaling import AutoscalingConfig, describe_changes
from vast_magic.errors import ConfigError

FIELDS = ["cold_workers", "max_workers", "min_load", "min_cold_load", "target_util", "cold_mult",
          "max_queue_time", "target_queue_time", "inactivity_timeout", "autoscaler_instance"]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))


def test_fields_are_the_official_names_and_start_unset():
    config = AutoscalingConfig()
    assert [f.name for f in dataclasses.fields(config)] == FIELDS
    assert config.set_fields() == {} and all(getattr(config, name) is None for name in FIELDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_workers = 3


@pytest.mark.parametrize("calls, expected", [
    ([{}], {}),
    ([{"max_workers": 4}, {"cold_workers": 1}], {"cold_workers": 1, "max_workers": 4}),
    ([{"max_workers": 4}, {"max_workers": 8}], {"max_workers": 8}),
    ([{"max_workers": 4, "target_util": 0.8}, {"max_workers": None}], {"target_util": 0.8}),
    ([{"inactivity_timeout": 300}], {"inactivity_timeout": 300.0}),
    ([{"cold_mult": 2, "min_load": 0, "min_cold_load": 1.5}], {"min_load": 0.0, "min_cold_load": 1.5, "cold_mult": 2.0}),
    ([{"max_queue_time": 30, "target_queue_time": 5}], {"max_queue_time": 30.0, "target_queue_time": 5.0}),
    ([{"cold_workers": 0, "max_workers": 1}], {"cold_workers": 0, "max_workers": 1}),
    ([{"max_workers": 3.0}], {"max_workers": 3}),
    ([{"target_util": 1}], {"target_util": 1.0}),
    ([{"autoscaler_instance": "alpha"}], {"autoscaler_instance": "alpha"}),
])
def test_later_calls_merge_never_replace(calls, expected):
    config = AutoscalingConfig()
    for call in calls:
        config = config.merged(**call)
    assert config.set_fields() == expected
    assert list(config.set_fields()) == [name for name in FIELDS if name in expected]   # field order
    assert all(type(v) is type(expected[k]) for k, v in config.set_fields().items())


@pytest.mark.parametrize("params, message", [
    ({"max_worker": 4}, "unknown autoscaling parameter(s) max_worker (did you mean max_workers?); valid ones: "
                        "cold_workers, max_workers"),
    ({"zzz": 1}, "unknown autoscaling parameter(s) zzz; valid ones:"),
    ({"cold_workers": -1}, "cold_workers must be a whole number >= 0"),
    ({"cold_workers": 1.5}, "cold_workers must be a whole number >= 0"),
    ({"cold_workers": True}, "cold_workers must be a finite number, got True"),
    ({"max_workers": 0}, "max_workers must be at least 1"),
    ({"max_workers": "4"}, "max_workers must be a finite number"),
    ({"cold_workers": 5, "max_workers": 2}, "cold_workers=5 is more than max_workers=2"),
    ({"target_util": 0}, "target_util must be in (0, 1]"),
    ({"target_util": 1.5}, "target_util must be in (0, 1]"),
    ({"target_util": False}, "target_util must be a finite number"),
    ({"max_queue_time": -1}, "max_queue_time must be >= 0"),
    ({"target_queue_time": math.inf}, "target_queue_time must be a finite number"),
    ({"inactivity_timeout": math.nan}, "inactivity_timeout must be a finite number"),
    ({"min_load": -0.5}, "min_load must be >= 0"),
    ({"min_cold_load": -2}, "min_cold_load must be >= 0"),
    ({"cold_mult": -1}, "cold_mult must be >= 0"),
    ({"autoscaler_instance": ""}, "autoscaler_instance must be a name such as 'prod'"),
    ({"autoscaler_instance": 3}, "autoscaler_instance must be a name such as 'prod'"),
])
def test_bad_values_are_config_errors(params, message):
    with pytest.raises(ConfigError) as info:
        AutoscalingConfig().merged(**params)
    assert message in str(info.value)


def test_combination_is_checked_across_calls_and_a_failure_keeps_the_old_config():
    config = AutoscalingConfig().merged(max_workers=2)
    with pytest.raises(ConfigError, match="raise max_workers to at least 3"):
        config.merged(cold_workers=3)
    assert config.set_fields() == {"max_workers": 2}
    assert config.merged(cold_workers=3, max_workers=3).set_fields() == {"cold_workers": 3, "max_workers": 3}


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="target_util"):
        AutoscalingConfig(target_util=2)


@pytest.mark.parametrize("old, new, reasons", [
    ({}, {}, ()),
    ({"max_workers": 4}, {"max_workers": 8}, ("autoscaling: max_workers 4 -> 8",)),
    ({}, {"target_util": 0.5}, ("autoscaling: target_util unset -> 0.5",)),
    ({"inactivity_timeout": 300}, {}, ("autoscaling: inactivity_timeout 300 -> unset",)),
    ({"max_workers": 4, "cold_workers": 1}, {"max_workers": 5, "cold_workers": 2, "autoscaler_instance": "alpha"},
     ("autoscaling: autoscaler_instance unset -> alpha", "autoscaling: cold_workers 1 -> 2",
      "autoscaling: max_workers 4 -> 5")),
    ({"max_queue_time": 30}, {"max_queue_time": 30.0}, ()),
])
def test_describe_changes_names_each_changed_key_sorted(old, new, reasons):
    assert describe_changes(AutoscalingConfig().merged(**old), AutoscalingConfig().merged(**new)) == reasons


def test_repr_shows_only_set_keys():
    assert repr(AutoscalingConfig().merged(max_workers=4)) == "AutoscalingConfig(max_workers=4)"
