"""`compare` rejects bad input with one line and exit code 2, before touching MLflow."""

import pytest

from tracking.cli import EXIT_BAD_INPUT, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--margin", "-0.1"], "margin must be a number from 0 to 10"),
        (["--margin", "nan"], "margin must be"),
        (["--margin", "ten"], "margin must be a number"),
        (["--all-finished", "maybe"], "all_finished must be true or false"),
        (["--parent-run-id", "abc", "--all-finished"], "not both"),
        (["--registered-model", "a/b"], "registered_model must be a name without any of /"),
    ],
)
def test_bad_compare_input_is_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert main(["compare", *args]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
