import ml_collections
import pytest

from nnbasics.config import ConfigError, apply_dict, apply_overrides, parse_value
from nnbasics.registry import Registry, UnknownNameError


def test_registry_unknown_name_suggests_closest():
    reg = Registry("widget")
    reg.register("resnet20", 1)
    reg.register("resnet56", 2)
    assert reg.get("resnet20") == 1
    with pytest.raises(UnknownNameError) as e:
        reg.get("resnet21")
    msg = str(e.value)
    assert "unknown widget 'resnet21'" in msg and "did you mean 'resnet20'" in msg and "resnet56" in msg


def test_registry_rejects_double_registration():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 2)


def _cfg():
    c = ml_collections.ConfigDict()
    c.steps = 100
    c.seeds = (0, 1)
    c.name = "adam"
    c.flag = False
    c.optimizer = ml_collections.ConfigDict({"learning_rate": 0.1, "momentum": 0.9})
    return c


def test_overrides_parse_and_coerce():
    c = apply_overrides(_cfg(), ["--config.steps=5", "config.optimizer.learning_rate=1", "seeds=(3,)",
                                 "--config.name=sgd", "--config.flag=true"])
    assert c.steps == 5 and isinstance(c.optimizer.learning_rate, float) and c.optimizer.learning_rate == 1.0
    assert c.seeds == (3,) and c.name == "sgd" and c.flag is True
    assert _cfg().steps == 100  # the original is not modified
    assert apply_overrides(_cfg(), ["seeds=7"]).seeds == (7,)


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError) as e:
        apply_overrides(_cfg(), ["--config.optimizer.learning_rat=0.1"])
    assert "optimizer.learning_rate" in str(e.value)


def test_wrong_types_rejected():
    with pytest.raises(ConfigError, match="integer"):
        apply_overrides(_cfg(), ["--config.steps=abc"])
    with pytest.raises(ConfigError, match="number"):
        apply_overrides(_cfg(), ["--config.optimizer.learning_rate=fast"])
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides(_cfg(), ["--config.steps"])
    with pytest.raises(ConfigError, match="group"):
        apply_dict(_cfg(), {"optimizer": 3})


def test_parse_value():
    assert parse_value("1e-3") == 1e-3
    assert parse_value("(1, 2)") == (1, 2)
    assert parse_value("None") is None
    assert parse_value("relu") == "relu"
