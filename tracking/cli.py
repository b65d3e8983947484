"""The thin command-line layer behind the MLproject entry points.

Every value arrives as a string (from `mlflow run -P` or the shell). The flags are made
from the schema in pipeline/config.py (and the tracking options below), converted and
validated into its dataclasses, and rejected with a one-line message naming the parameter
before any run is created or any data is touched.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

# Only what checking the arguments needs is imported up front (torch and MLflow take
# seconds): a refusal comes at once.
from pipeline.config import (
    ClusterConfig,
    CompareConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TrainConfig,
    TrainingFailed,
    allowed,
    check_writable,
    from_params,
    one_line,
    option,
    param_name,
    to_param,
)
from tracking import names

EXIT_BAD_INPUT = 2
SERVER_WAIT_SECONDS = 15  # how long a tracking server may take to answer at start
SERVER_RETRY_SECONDS = 2
LATEST_SWEEP = "latest"
NOT_IN_NAMES = "/:%\\?"
"""MLflow 3.17's registry refuses / and : in a model's name, its file store also % and
the path separator (a backslash on Windows), and ? cuts a models:/ URI short; names that are
paths (., .., ..x) are refused too. Checked here, before any work: MLflow checks only
when it registers, after training (tests/tracking/test_cli.py compares the two rules)."""


@dataclass(frozen=True)
class Registry:
    registered_model: str = option(
        names.AUTO_REGISTERED_MODEL,
        "registered model: a version and alias per training run, the champion alias (auto: "
        "each dataset's own, <dataset>-autoencoder)",
    )

    def __post_init__(self) -> None:
        if self.names_one:
            check_model_name(self.registered_model)

    @property
    def names_one(self) -> bool:
        return names.names_one_model(self.registered_model)

    @property
    def given(self) -> str:
        """The model named, or "" for each dataset's own."""
        return self.registered_model if self.names_one else ""

    def for_dataset(self, dataset: str) -> str:
        """The registered model of a dataset's runs: the one named, else the dataset's own."""
        name = names.registered_model_for(dataset, self.registered_model)
        check_model_name(name)
        return name


def check_model_name(name: str) -> None:
    """ConfigError unless MLflow's registry takes `name` (NOT_IN_NAMES)."""
    if not name.strip() or set(name) & set(NOT_IN_NAMES) or name == "." or name[:2] == "..":
        raise ConfigError(
            f"registered_model must be a name without any of {' '.join(NOT_IN_NAMES)}, "
            f"neither . nor starting with .. (got {name!r})"
        )


@dataclass(frozen=True)
class Resumption:
    resume_run_id: str = option(
        "",
        "continue this stopped training run from its checkpoint, with its own parameters "
        "(the other options are then ignored)",
    )


@dataclass(frozen=True)
class Selection:
    parent_run_id: str = option(
        LATEST_SWEEP, f"compare this run's training children ({LATEST_SWEEP}: the newest sweep)"
    )
    all_finished: bool = option(False, "compare every finished training run instead")

    def __post_init__(self) -> None:
        if self.parent and self.all_finished:
            raise ConfigError("give either parent_run_id or all_finished=true, not both")

    @property
    def parent(self) -> str | None:
        return None if self.parent_run_id in ("", LATEST_SWEEP) else self.parent_run_id


Configs = dict[type, object]


def _check_machine(train: TrainConfig, data: DataConfig) -> None:
    """ConfigError unless this machine has the device, runs the precision on it and can
    write the data dir."""
    if train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device must be auto or cpu here: torch finds no CUDA device")
    _check_precision(train)
    check_writable(data.data_dir)


def _check_data(data: DataConfig, model: ModelConfig | None = None):
    """The dataset's source (pipeline.training.datasets.resolve; a folder's images decoded
    and cached), or ConfigError saying why it cannot be used: unknown, a folder that cannot
    be read, a model's code larger than the images."""
    from pipeline.training import datasets

    try:
        source = datasets.resolve(data)
        if datasets.is_folder(data.dataset):  # decoded once, here: a corrupt image is named
            source.ensure(data.data_dir)  # before any run (later loads read the cache)
    except datasets.DataError as exc:
        raise ConfigError(str(exc)) from None
    pixels = math.prod(source.shape)
    if model is not None and model.latent_dim > pixels:
        raise ConfigError(
            f"latent_dim must be at most {pixels}, the C*H*W of {source.name}'s images "
            f"(got {model.latent_dim}): a larger code compresses nothing"
        )
    return source


def _check_precision(train: TrainConfig) -> None:
    """ConfigError if train asks for bf16 on a device where torch reports none."""
    if train.precision == "bf16":  # torch only then: a refusal of fp32 input stays quick
        from pipeline.training.hardware import require_precision

        require_precision(train.precision, train.device)


def _train(c: Configs) -> Callable[[], object]:
    resume_id = c[Resumption].resume_run_id.strip()
    if resume_id:
        from tracking.requests import prepare_resume
        from tracking.training import train_tracked

        _same_data(c[DataConfig], resume_id)
        request = prepare_resume(resume_id)  # ConfigError where its data changed
        _check_machine(request.train, request.data)  # its own device and data dir
        request.hardware()  # ConfigError where this machine lacks the precision it began in
        return lambda: train_tracked(request)
    _check_machine(c[TrainConfig], c[DataConfig])
    source = _check_data(c[DataConfig], c[ModelConfig])
    registered = c[Registry].for_dataset(source.name)

    def work() -> object:
        from tracking.requests import TrainingRequest
        from tracking.training import train_tracked

        model, data, train = c[ModelConfig], c[DataConfig], c[TrainConfig]
        return train_tracked(TrainingRequest(model, data, train, registered, source.name))

    return work


def _same_data(asked: DataConfig, resume_id: str) -> None:
    """ConfigError where a resume is asked for with a dataset, image size or channels
    other than the defaults: a run continues on its own data, never on another."""
    default = DataConfig(data_dir=asked.data_dir)
    fields_ = ("dataset", "image_size", "channels")
    if any(getattr(asked, f) != getattr(default, f) for f in fields_):
        raise ConfigError(
            f"resume_run_id continues run {resume_id} on its own dataset and image shape: "
            "leave dataset, image_size and channels at their defaults"
        )


def _check_cluster(cluster: ClusterConfig, train: TrainConfig, data: DataConfig) -> None:
    """ConfigError unless the steps can run where the cluster config says; with
    backend=ray, joins the cluster (tracking.ray_steps.connect)."""
    if cluster.backend != "ray":
        _check_machine(train, data)
        return
    if train.device == "cuda" and not cluster.step_gpus:
        raise ConfigError("device=cuda with backend=ray needs step_gpus > 0")
    check_writable(data.data_dir)  # the comparison reads the data on this machine
    from tracking.ray_steps import connect

    connect(cluster)


def _sweep(c: Configs) -> Callable[[], object]:
    sweep, cluster, registry = c[SweepConfig], c[ClusterConfig], c[Registry]
    train = replace(c[TrainConfig], seed=sweep.seeds[0])
    if registry.names_one and len(sweep.datasets) > 1:
        raise ConfigError(
            "registered_model names one registered model: with several datasets leave it "
            "auto, and each dataset's runs go to <dataset>-autoencoder"
        )
    sources = _sweep_sources(sweep, c[DataConfig])
    for source in sources.values():
        registry.for_dataset(source.name)
    _check_cluster(cluster, train, c[DataConfig])

    def work() -> object:
        from tracking.sweep import SweepRequest, run_sweep

        request = SweepRequest(sweep, c[DataConfig], train, registry.given, cluster)
        return run_sweep(request, sources)

    return work


def _sweep_sources(sweep: SweepConfig, data: DataConfig) -> dict:
    """Each dataset's source (image_size and channels apply to the folders among them),
    every configuration checked against it; ConfigError for the first that fails."""
    from tracking.sweep import data_for

    biggest = ModelConfig("conv", max(*sweep.latent_dims, sweep.linear_dim))
    sources = {ds: _check_data(data_for(data, ds), biggest) for ds in sweep.datasets}
    names_ = [s.name for s in sources.values()]
    if len(set(names_)) < len(names_):
        raise ConfigError(f"datasets must name different data (their names: {', '.join(names_)})")
    return sources


def _compare(c: Configs) -> Callable[[], object]:
    config, selection, registered = c[CompareConfig], c[Selection], c[Registry].given
    check_writable(config.data_dir)
    from tracking.query import find_runs
    from tracking.registry import RegistryError, require_registered_model

    runs = find_runs(selection.parent, selection.all_finished)  # none to compare: bad input
    try:
        if registered:  # "": each dataset's own, from its runs (tracking.compare)
            require_registered_model(registered)  # where the champion alias goes
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None

    def work() -> object:
        from tracking.compare import run_compare

        return run_compare(runs, config, registered)

    return work


@dataclass(frozen=True)
class Command:
    help: str
    schema: tuple[type, ...]
    """Its flags' dataclasses (MLproject's parameters: tests/tracking/test_cli.py)."""
    prepare: Callable[[Configs], Callable[[], object]]
    skip: tuple[str, ...] = ()


COMMANDS = {
    "train": Command(
        "train one autoencoder in an MLflow run",
        (ModelConfig, TrainConfig, DataConfig, Registry, Resumption),
        _train,
    ),
    "sweep": Command(
        "train every latent size and the linear baseline from every seed, then compare",
        (SweepConfig, ClusterConfig, TrainConfig, DataConfig, Registry),
        _sweep,
        skip=("seed", "dataset"),
    ),
    "compare": Command(
        "compare finished training runs; move the champion alias to the pick",
        (Selection, CompareConfig, Registry),
        _compare,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tracking.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        for f in (f for cls in command.schema for f in fields(cls)):
            if param_name(f) not in command.skip:
                flag = "--" + param_name(f).replace("_", "-")
                within = f"{allowed(f)}; " if f.metadata.get("within") else ""
                text = f"{f.metadata['help']} ({within}default: {to_param(f.default)})"
                text = text.replace("%", "%%")
                more = {"nargs": "?", "const": "true"} if f.type == "bool" else {}
                p.add_argument(flag, help=text, **more)
    return parser


def configs(args: argparse.Namespace) -> Configs:
    """The command's dataclasses from its flags (a flag not given: the field's default)."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    return {cls: from_params(cls, given) for cls in COMMANDS[args.command].schema}


def check_tracking_server(wait_seconds: float = SERVER_WAIT_SECONDS) -> None:
    """With an http(s) tracking URI, make sure a server answers before any work starts:
    ConfigError after about wait_seconds, instead of MLflow's retries of every request
    (minutes). A server that answers but refuses gets an error naming the likely cause."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")  # unset: the local default store
    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise ConfigError(
                    f"the tracking server at {uri} refused the request (HTTP {exc.code}): "
                    "check its --allowed-hosts and your MLFLOW_TRACKING_USERNAME/PASSWORD"
                ) from None
            return  # it answers; MLflow's own requests will say more
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() >= deadline:
                reason = getattr(exc, "reason", exc)
                raise ConfigError(
                    f"no MLflow tracking server answers at {uri} ({reason}); start it, or "
                    "point MLFLOW_TRACKING_URI at a running one (docs/team-setup.md)"
                ) from None
            time.sleep(SERVER_RETRY_SECONDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_tracking_server()
        work = COMMANDS[args.command].prepare(configs(args))  # checks only: no run, no data
    except ConfigError as exc:
        message = str(exc).splitlines()[0]
        print(f"error: {message}", file=sys.stderr)
        if os.environ.get("MLFLOW_RUN_ID"):  # `mlflow run` made a run: end it FAILED
            from tracking.runs import fail_pending_run

            fail_pending_run(message)
        return EXIT_BAD_INPUT
    return _work(work)


def _work(work: Callable[[], object]) -> int:
    """Do the validated work in the experiment chosen for it; Ctrl-C and SIGTERM end its
    runs KILLED."""
    from mlflow.exceptions import MlflowException

    from pipeline.training.hardware import prepare_process
    from pipeline.training.tensors import flush_denormals
    from tracking.runs import (
        Terminated,
        WorkError,
        choose_experiment,
        guard_killed_status,
        install_signal_handlers,
    )

    flush_denormals()  # before torch starts its worker threads
    prepare_process()  # before any CUDA work
    install_signal_handlers()
    pending_run = os.environ.get("MLFLOW_RUN_ID")  # start_run removes it
    try:
        choose_experiment()
        work()
    except (KeyboardInterrupt, Terminated) as exc:
        guard_killed_status(pending_run)
        print(f"stopped: {exc or 'interrupted'}; the run was marked KILLED", file=sys.stderr)
        return 130
    except WorkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingFailed as exc:  # the run is FAILED with the same reason
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except MlflowException as exc:  # the tracking server or store failed mid-run
        print(f"error: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
