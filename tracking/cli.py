"""The thin command-line layer behind the MLproject entry points.

Every value arrives as a string (from `mlflow run -P` or the shell), is converted and
validated here into the pipeline's config dataclasses, and rejected with a one-line
message naming the parameter before any run is created or any data is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

# Only what checking the arguments needs is imported up front (torch and MLflow take
# seconds): a refusal comes at once.
from pipeline.config import (
    DEFAULT_MARGIN,
    CompareConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    check_writable,
    parse_latent_dims,
    parse_seeds,
)
from tracking import names

EXIT_BAD_INPUT = 2
SERVER_WAIT_SECONDS = 15  # how long a tracking server may take to answer at start
SERVER_RETRY_SECONDS = 2
LATEST_SWEEP = "latest"


def _integer(name: str, text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer (got {text!r})") from None


def _number(name: str, text: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {text!r})") from None


def _limit(name: str, text: str) -> int | None:
    value = _integer(name, text)
    if value < 0:
        raise ConfigError(f"{name} must be 0 (all images) or a positive integer (got {text!r})")
    return value or None


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", default="10", help="passes over the training set (default 10)")
    p.add_argument("--lr", default="1e-3", help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", default="128", help="mini-batch size (default 128)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument(
        "--max-restarts",
        default="20",
        help="fresh initialisations (seed + 10000 k) after one fails the health check (default 20)",
    )
    p.add_argument("--data-dir", default="./data", help="MNIST folder (default ./data)")
    p.add_argument("--train-limit", default="0", help="first N training images (0: all)")
    p.add_argument("--test-limit", default="0", help="first N test images (0: all)")
    p.add_argument(
        "--registered-model",
        default=names.DEFAULT_REGISTERED_MODEL,
        help=f"registered model name (default {names.DEFAULT_REGISTERED_MODEL})",
    )


def _configs(args: argparse.Namespace, seed: int = 0) -> tuple[DataConfig, TrainConfig]:
    data = DataConfig(
        data_dir=args.data_dir,
        train_limit=_limit("train_limit", args.train_limit),
        test_limit=_limit("test_limit", args.test_limit),
    )
    train = TrainConfig(
        epochs=_integer("epochs", args.epochs),
        lr=_number("lr", args.lr),
        batch_size=_integer("batch_size", args.batch_size),
        seed=seed,
        device=args.device,
        max_restarts=_integer("max_restarts", args.max_restarts),
    )
    if not args.registered_model.strip():
        raise ConfigError("registered_model must be a non-empty name")
    if train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device must be auto or cpu here: torch finds no CUDA device")
    check_writable(data.data_dir)
    return data, train


def _train(args: argparse.Namespace) -> Callable[[], object]:
    if args.resume_run_id.strip():
        from tracking.training import prepare_resume, train_tracked

        resume = prepare_resume(args.resume_run_id.strip())
        check_writable(resume.data.data_dir)
        return lambda: train_tracked(
            resume.model, resume.data, resume.train, resume.registered_model, resume
        )
    model = ModelConfig(kind=args.kind, latent_dim=_integer("latent_dim", args.latent_dim))
    data, train = _configs(args, _integer("seed", args.seed))

    def work() -> object:
        from tracking.training import train_tracked

        return train_tracked(model, data, train, args.registered_model)

    return work


def _sweep(args: argparse.Namespace) -> Callable[[], object]:
    dims = parse_latent_dims(args.latent_dims)
    linear = ModelConfig(kind="linear", latent_dim=_integer("linear_latent_dim", args.linear_dim))
    parallel = _integer("parallel", args.parallel)
    if parallel < 1:
        raise ConfigError(f"parallel must be a positive integer (got {args.parallel!r})")
    force = _flag("force", args.force)
    seeds = parse_seeds(args.seeds)
    data, train = _configs(args, seeds[0])

    def work() -> object:
        from tracking.sweep import run_sweep

        return run_sweep(
            dims, linear.latent_dim, seeds, data, train, args.registered_model, parallel, force
        )

    return work


def _flag(name: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be true or false (got {text!r})")
    return value in ("true", "1", "yes")


def _compare(args: argparse.Namespace) -> Callable[[], object]:
    parent = args.parent_run_id.strip()
    parent = None if parent in ("", LATEST_SWEEP) else parent
    all_finished = _flag("all_finished", args.all_finished)
    if parent and all_finished:
        raise ConfigError("give either parent_run_id or all_finished=true, not both")
    config = CompareConfig(margin=_number("margin", args.margin), data_dir=args.data_dir)
    if not args.registered_model.strip():
        raise ConfigError("registered_model must be a non-empty name")
    check_writable(config.data_dir)
    from tracking.query import find_runs
    from tracking.registry import RegistryError, require_registered_model

    runs = find_runs(parent, all_finished)  # read-only; no runs to compare is bad input
    try:
        require_registered_model(args.registered_model)  # where the champion alias goes
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None

    def work() -> object:
        from tracking.compare import run_compare

        return run_compare(runs, config, args.registered_model)

    return work


def _add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parent-run-id",
        default=LATEST_SWEEP,
        help=f"compare this run's training children ({LATEST_SWEEP!r}: the newest sweep)",
    )
    p.add_argument(
        "--all-finished",
        nargs="?",
        const="true",
        default="false",
        help="compare every finished training run of the experiment instead",
    )
    p.add_argument(
        "--margin",
        default=str(DEFAULT_MARGIN),
        help=f"pick the smallest d within this relative margin of the best MSE ({DEFAULT_MARGIN})",
    )
    p.add_argument("--data-dir", default="./data", help="MNIST folder, PCA floors' cache")
    p.add_argument(
        "--registered-model",
        default=names.DEFAULT_REGISTERED_MODEL,
        help="registered model whose champion alias moves to the pick",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tracking.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one autoencoder in an MLflow run")
    train.add_argument("--kind", default="conv", help="conv or linear (default conv)")
    train.add_argument("--latent-dim", default="100", help="code size (default 100)")
    train.add_argument("--seed", default="0", help="seed of the first initialisation (default 0)")
    _add_training_args(train)
    train.add_argument(
        "--resume-run-id",
        default="",
        help="continue this stopped training run from its checkpoint, with its own "
        "parameters (the other options are then ignored)",
    )
    train.set_defaults(prepare=_train)
    sweep = sub.add_parser("sweep", help="train every latent size and the linear baseline")
    sweep.add_argument("--latent-dims", default="3,10,100,250", help="conv latent sizes")
    sweep.add_argument("--linear-dim", default="10", help="linear baseline's latent size")
    sweep.add_argument(
        "--seeds",
        default="0",
        help="seeds to train every configuration from, e.g. 0,1,2 (default 0)",
    )
    sweep.add_argument("--parallel", default="1", help="training steps run at once (default 1)")
    sweep.add_argument(
        "--force",
        nargs="?",
        const="true",
        default="false",
        help="train every step again instead of reusing matching FINISHED runs",
    )
    _add_training_args(sweep)
    sweep.set_defaults(prepare=_sweep)
    compare = sub.add_parser("compare", help="compare finished training runs; set the champion")
    _add_compare_args(compare)
    compare.set_defaults(prepare=_compare)
    return parser


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
                    "point MLFLOW_TRACKING_URI at a running one (README: team setup)"
                ) from None
            time.sleep(SERVER_RETRY_SECONDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_tracking_server()
        work = args.prepare(args)  # validation only: no run, no data, no training yet
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

    from pipeline.train import flush_denormals
    from tracking.runs import (
        Terminated,
        choose_experiment,
        guard_killed_status,
        install_signal_handlers,
    )

    flush_denormals()  # before torch starts its worker threads
    install_signal_handlers()
    pending_run = os.environ.get("MLFLOW_RUN_ID")  # start_run removes it
    try:
        choose_experiment()
        work()
    except (KeyboardInterrupt, Terminated) as exc:
        guard_killed_status(pending_run)
        print(f"stopped: {exc or 'interrupted'}; the run was marked KILLED", file=sys.stderr)
        return 130
    except MlflowException as exc:  # the tracking server or store failed mid-run
        print(f"error: {' '.join(str(exc).split())[:2000]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
