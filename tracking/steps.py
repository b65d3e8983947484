"""A sweep's training step as every backend sees it: the job to train, how it ended, the
interface a backend offers the sweep, and the one function that trains a step wherever it
runs. The backends (tracking.backends, tracking.ray_steps) import this; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tracking.requests import TrainingRequest


@dataclass(frozen=True)
class Job:
    """One step to train: its run name, its entry point with the parameters `mlflow run`
    takes, and the request that trains it."""

    label: str
    entry_point: str
    params: dict[str, str]
    request: TrainingRequest


Ended = tuple[str, "str | None"]
"""A step that ended: its label, and its failure line (None: its run FINISHED)."""


class Backend(Protocol):
    def room(self) -> bool:
        """Whether another step can start now."""

    def start(self, job: Job) -> None:
        """Start the step (the in-process backend trains it to its end)."""

    def busy(self) -> bool:
        """Whether a started step has not yet been reported by wait()."""

    def wait(self) -> list[Ended]:
        """Block until at least one started step has ended; return those that did. On a
        stop signal, stop every running step (its run ends KILLED), then raise."""


def train_step(request: TrainingRequest) -> str:
    """Train one step in its run: the same function in every backend. Returns the run id."""
    from tracking.training import train_tracked

    return train_tracked(request)
