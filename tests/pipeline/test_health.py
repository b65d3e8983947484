"""The health check's decision on hand-made looks at a model."""

from pipeline.health import (
    CONSTANT,
    CONSTANT_STD,
    HEALTH_WINDOW,
    HEALTHY,
    PLATEAU,
    PLATEAU_RATIO,
    Look,
    judge,
)


def at(step: int, std: float = 0.3, ratio: float = 0.5) -> Look:
    return Look(step=step, output_std=std, loss=0.114 * ratio, black_ratio=ratio)


def test_a_constant_output_is_decided_at_once():
    verdict = judge(at(25, std=CONSTANT_STD / 2, ratio=1.0), window_done=False)
    assert verdict.state == CONSTANT and verdict.look.step == 25
    assert "constant output at step 25" in verdict.describe()


def test_a_plateau_is_decided_only_at_the_end_of_the_window():
    stuck = PLATEAU_RATIO + 0.01
    assert judge(at(HEALTH_WINDOW - 25, ratio=stuck), window_done=False) is None
    verdict = judge(at(HEALTH_WINDOW, ratio=stuck), window_done=True)
    assert verdict.state == PLATEAU and not verdict.healthy
    assert "stuck at the all-black loss at step 200" in verdict.describe()
    assert judge(at(HEALTH_WINDOW, ratio=PLATEAU_RATIO - 0.01), True).state == HEALTHY


def test_a_loss_above_the_black_output_is_a_plateau_too():
    # A model that only got worse than the all-black output has not learned either.
    assert judge(at(HEALTH_WINDOW, ratio=2.5), window_done=True).state == PLATEAU


def test_a_run_shorter_than_the_window_is_not_judged_on_its_loss():
    assert judge(at(40, ratio=1.0), window_done=True).state == HEALTHY
    assert judge(at(40, std=0.0, ratio=1.0), window_done=True).state == CONSTANT
