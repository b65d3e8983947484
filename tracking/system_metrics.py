"""At least one sample of system metrics in every run that asks for them, however short.

MLflow 3.17's SystemMetricsMonitor (what ``mlflow.start_run(log_system_metrics=True)``
starts) takes a sample, waits MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL (10 s by default),
and only then logs it: a run that ends sooner (a linear run takes about 7 s) has none.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.tracking.fluent import run_id_to_system_metrics_monitor

from pipeline.config import one_line

PREFIX = "system/"  # SystemMetricsMonitor's, before every metric it logs


def log_a_sample_at_least(run_id: str) -> None:
    """Stop the run's system-metrics monitor; if it logged nothing into the run, log one
    sample taken now with the monitor's own collectors. No monitor: nothing to do. A
    failure is a warning: it must not change how the run ends."""
    monitor = run_id_to_system_metrics_monitor.get(run_id)
    if monitor is None:
        return
    try:
        monitor.finish()  # its thread stops and what it logged is flushed; end_run's is a no-op
        if any(key.startswith(PREFIX) for key in MlflowClient().get_run(run_id).data.metrics):
            return
        # The thread's sample from the run's start has the CPU at 0% (psutil counts from
        # its previous call): a fresh one gives the CPU's use over the whole run.
        for collector in monitor.monitors:
            collector.clear_metrics()
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
    except Exception as exc:
        print(f"warning: could not log system metrics into run {run_id}: {one_line(exc)}")
