"""Where a sweep's training steps run, behind one small interface: the sweep hands each
step to a backend as a Job and waits for steps to end, whatever the backend.

- InProcess: each step in the sweep's own process, one after the other (the default).
- Processes: each step its own training process, `parallel` at a time (tracking.launch).
- RaySteps (tracking.ray_steps): each step a task on a Ray cluster.

Wherever it runs, a step is trained by tracking.steps.train_step.
"""

from __future__ import annotations

import mlflow

from pipeline.config import ClusterConfig, one_line
from tracking import launch
from tracking.steps import Backend, Ended, Job, train_step


class InProcess:
    """Each step trained in this process, in a child run of the active (sweep) run."""

    def __init__(self) -> None:
        self.ended: list[Ended] = []

    def room(self) -> bool:
        return True

    def start(self, job: Job) -> None:
        try:
            train_step(job.request)
        except Exception as exc:  # its run ended FAILED with the reason: go on
            reason = one_line(exc)
            print(f"{job.label} failed: {reason}", flush=True)
            self.ended.append((job.label, launch.failure_line(job.label, reason)))
        else:
            self.ended.append((job.label, None))

    def busy(self) -> bool:
        return bool(self.ended)

    def wait(self) -> list[Ended]:
        ended, self.ended = self.ended, []
        return ended


class Processes:
    """Each step its own training process (tracking.launch), in a child run of the sweep,
    `parallel` at a time; a stop signal is passed on to them."""

    def __init__(self, parallel: int, parent_run_id: str, experiment_id: str) -> None:
        self.parallel, self.parent_run_id, self.experiment_id = (
            parallel,
            parent_run_id,
            experiment_id,
        )
        self.tracking_uri = mlflow.get_tracking_uri()
        self.running: list[launch.Launched] = []

    def room(self) -> bool:
        return len(self.running) < self.parallel

    def start(self, job: Job) -> None:
        started = launch.launch(job, self.experiment_id, self.parent_run_id, self.tracking_uri)
        self.running.append(started)

    def busy(self) -> bool:
        return bool(self.running)

    def wait(self) -> list[Ended]:
        ended = []
        for launched, code in launch.wait_any(self.running):
            self.running.remove(launched)
            failed = not launch.settle(launched, code)
            ended.append(
                (launched.label, launch.report_failure(launched, code) if failed else None)
            )
        return ended


def make_backend(
    cluster: ClusterConfig, parallel: int, parent_run_id: str, experiment_id: str
) -> Backend:
    """The backend the sweep's parameters choose. With backend=ray, the connection made by
    tracking.ray_steps.connect (before the sweep's run began) is used."""
    if cluster.backend == "ray":
        from tracking.ray_steps import RaySteps

        return RaySteps(cluster, parent_run_id, experiment_id)
    if parallel > 1:
        return Processes(parallel, parent_run_id, experiment_id)
    return InProcess()
