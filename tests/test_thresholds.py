"""Thresholds live in the experiments' code (THRESHOLDS), never in their configs, so no
`--config.` override can make a claim pass and verdicts can be recomputed from stored measurements."""

import re

import pytest

from nnbasics.runs import claims
from nnbasics.runs import experiment as exp

# Words that name a decision boundary rather than a setting of the run.
THRESHOLD_KEY = re.compile(r"(tolerance|margin|threshold|^min_|^max_|_min$|_max$|allowance)")
# Config keys that match the pattern but are measurement settings (what is measured, not how it is judged).
NOT_THRESHOLDS = {
    ("image_statistics", "max_distance"),  # the largest pixel distance at which correlations are measured
    ("regularization", "log10_lambda_min"), ("regularization", "log10_lambda_max"),  # the ridge lambda grid
    ("optimizers", "fn_lr_min"), ("optimizers", "fn_lr_max"),  # the learning-rate grid searched per optimizer
    ("residual", "min_frac"), ("residual", "max_frac"),  # the photos' crop sizes (fractions of a photo's side)
}


def _keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


@pytest.mark.parametrize("name", exp.experiment_names())
def test_no_threshold_is_a_config_key(name):
    for preset in exp.PRESETS:
        cfg = exp.get_config(name, preset).to_dict()
        bad = [k for k in _keys(cfg) if THRESHOLD_KEY.search(k.split(".")[-1])
               and (name, k.split(".")[-1]) not in NOT_THRESHOLDS]
        assert not bad, f"{name} ({preset}) has threshold-like config keys {bad}: move them to THRESHOLDS"


@pytest.mark.parametrize("name", exp.experiment_names())
def test_thresholds_are_declared_in_code(name):
    th = exp.thresholds_of(name)
    assert th, f"experiments.{name} declares no THRESHOLDS"
    for key, t in th.items():
        assert isinstance(t, claims.Threshold), f"THRESHOLDS[{key!r}] of {name} is not a claims.Threshold"
        assert t.why, f"THRESHOLDS[{key!r}] of {name} does not say where its value comes from"
