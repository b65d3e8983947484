"""The rule benchmarks.precision applies to bf16 against fp32: one-sided."""

import pytest

from benchmarks.precision import MEAN_MARGIN, passes


@pytest.mark.parametrize(
    ("diff", "in_range", "verdict"),
    [
        (-0.0364, False, True),  # lower than float32's range: better, never a failure
        (MEAN_MARGIN, False, True),
        (0.021, False, False),
        (0.021, True, True),  # above by more, but inside float32's seed range
        (0.5, False, False),
    ],
)
def test_the_precision_rule_is_one_sided(diff, in_range, verdict):
    assert passes(diff, in_range) is verdict
