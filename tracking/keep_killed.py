"""Keep an interrupted `mlflow run` run KILLED.

On Ctrl-C, `mlflow run` (MLflow 3.17) waits for its child, then marks the run FAILED
unless it is already terminated; its check compares the status string with integer
codes and never matches, so the KILLED status our child recorded is overwritten. The
child therefore starts this small detached process, which waits for `mlflow run` to
exit and puts the status back.

Usage: python -m tracking.keep_killed RUN_ID PID
"""

from __future__ import annotations

import os
import sys
import time

from mlflow import MlflowClient

from tracking import names

WAIT_SECONDS = 60


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keep_killed(run_id: str, pid: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    client = MlflowClient()
    run = client.get_run(run_id)
    if run.info.status == "FAILED" and names.TAG_FAILURE in run.data.tags:
        reason = run.data.tags[names.TAG_FAILURE]
        if reason.startswith(("interrupted", "Terminated", "KeyboardInterrupt")):
            client.set_terminated(run_id, "KILLED", end_time=run.info.end_time)


if __name__ == "__main__":
    keep_killed(sys.argv[1], int(sys.argv[2]))
