"""The health check's decision on hand-made looks at a model."""

from pipeline.training.health import (
    CONSTANT,
    CONSTANT_STD,
    DIVERGED,
    DIVERGED_RATIO,
    HEALTH_WINDOW,
    HEALTHY,
    PLATEAU,
    PLATEAU_RATIO,
    Look,
    judge,
)


def at(step: int, std: float = 0.3, ratio: float = 0.5) -> Look:
    return Look(step=step, output_std=std, loss=0.114 * ratio, black_ratio=ratio)


def test_a_constant_output_at_the_end_of_the_window_fails_whatever_its_loss():
    for ratio in (1.0, 0.59):  # the all-black output, or the mean image
        verdict = judge(at(HEALTH_WINDOW, std=CONSTANT_STD / 2, ratio=ratio))
        assert verdict.state == CONSTANT and not verdict.healthy
    assert "constant output at step 200" in verdict.describe()


def test_a_plateau_is_a_loss_still_near_the_black_output_at_the_end_of_the_window():
    verdict = judge(at(HEALTH_WINDOW, ratio=PLATEAU_RATIO + 0.01))
    assert verdict.state == PLATEAU and not verdict.healthy
    assert "stuck at the all-black loss at step 200" in verdict.describe()
    assert judge(at(HEALTH_WINDOW, ratio=PLATEAU_RATIO - 0.01)).state == HEALTHY


def test_a_loss_above_the_black_output_is_a_plateau_too():
    # A model that only got worse than the all-black output has not learned either.
    assert judge(at(HEALTH_WINDOW, ratio=DIVERGED_RATIO - 0.01)).state == PLATEAU


def test_a_loss_far_above_the_black_output_has_diverged():
    verdict = judge(at(HEALTH_WINDOW, ratio=DIVERGED_RATIO))
    assert verdict.state == DIVERGED and not verdict.healthy
    assert "diverged at step 200" in verdict.describe()
    assert judge(at(HEALTH_WINDOW - 1, ratio=DIVERGED_RATIO * 1e6)).state == HEALTHY


def test_a_run_shorter_than_the_window_is_not_judged_on_its_loss():
    assert judge(at(40, ratio=1.0)).state == HEALTHY
    assert judge(at(40, std=0.0, ratio=1.0)).state == CONSTANT
