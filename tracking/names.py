"""Metric names, tag keys and registry names: the project's vocabulary in MLflow."""

from datetime import datetime

# Per-epoch metrics, always logged with step=epoch.
TRAIN_MSE = "train_mse"
TEST_MSE = "test_mse"
TRAIN_EVAL_MSE = "train_eval_mse"  # same weights as test_mse, 10,000 fixed training images
EPOCH_SECONDS = "epoch_seconds"
IMAGES_PER_SECOND = "train_images_per_second"
EPOCH_METRICS = (TRAIN_MSE, TEST_MSE, TRAIN_EVAL_MSE, EPOCH_SECONDS, IMAGES_PER_SECOND)

# Summary metrics, logged once at the end of a training run.
FINAL_TRAIN_MSE = "final_train_mse"  # eval pass over the whole training set, final weights
FINAL_TEST_MSE = "final_test_mse"
BEST_TEST_MSE = "best_test_mse"
BEST_EPOCH = "best_epoch"
GAP = "generalization_gap"  # final_test_mse - final_train_mse
PARAMS_TOTAL = "params_total"
PARAMS_ENCODER = "params_encoder"
PARAMS_DECODER = "params_decoder"
TRAIN_SECONDS = "train_seconds"
# Initialisations that failed the health check (pipeline/training/health.py) and were replaced by
# a restart seed: in all, and by reason.
RESTARTS = "restarts"
RESTARTS_CONSTANT = "restarts_constant"
RESTARTS_PLATEAU = "restarts_plateau"
TRACKING_SECONDS = "tracking_seconds"  # time in MLflow calls: epochs, images, dataset, model
SWEEP_SECONDS = "sweep_seconds"  # on a sweep: its training steps, without the comparison
# Latent quality, from the final model's codes (pipeline/analysis/latent.py): computed at training
# time so that a comparison over many runs only reads them.
KNN_ACCURACY = "knn5_accuracy"  # 5-NN digit accuracy: fit on training codes, test codes scored
SILHOUETTE = "silhouette"  # silhouette of the test codes grouped by digit
LATENT_SECONDS = "latent_quality_seconds"  # cost of encoding both splits and scoring
# Largest per-pixel std of the final model's outputs over the first 256 test digits; under
# pipeline.training.health.CONSTANT_STD the output no longer depends on the input: collapsed.
OUTPUT_STD = "output_std"
# Training steps that replayed a captured CUDA graph (0: every step ran eagerly, on the CPU,
# with cuda_graphs=false, or after a capture that failed).
GRAPH_REPLAYS = "cuda_graph_replays"

# Parameters a training run logs beside its entry point's: what they resolved to here.
PARAM_DEVICE_USED = "device_used"  # device=auto: cuda or cpu
PARAM_PRECISION_USED = "precision_used"  # precision=auto: fp32 or bf16 (reuse compares it)
# Whether training steps really replayed a captured CUDA graph (GRAPH_REPLAYS > 0): known
# only once training ended, and logged then.
PARAM_CUDA_GRAPHS_USED = "cuda_graphs_used"
PARAM_TF32_USED = "tf32_used"  # float32 convolutions and matmuls in TF32 (CUDA only; false)

# Tags.
TAG_KIND = "model_kind"
TAG_DATASET = "dataset"  # the dataset's name (a folder's, made a valid name): the UI groups by it
TAG_LATENT = "latent_dim"
TAG_CODE_VERSION = "code_version"
TAG_INIT_SEED = "init_seed"  # the seed whose initialisation was kept after any restarts
TAG_RESTART_LOG = "restart_log"  # one line per initialisation that failed the health check
TAG_FAILURE = "failure_reason"
# Where a number came from, on every run (tracking/host.py).
TAG_HOST_CPU = "host.cpu"  # CPU model name
TAG_HOST_ISA = "host.cpu_capability"  # the instruction set torch's kernels use, e.g. AVX512
TAG_HOST_THREADS = "host.threads"  # torch's intra-op threads
TAG_HOST_GPU = "host.gpu"  # CUDA device name, "none" without one
TAG_TORCH_VERSION = "host.torch_version"
TAG_MLFLOW_VERSION = "host.mlflow_version"
TAG_ROLE = "role"  # "train", "sweep" or "comparison"
TAG_REGISTERED_VERSION = "registered_version"
TAG_PARENT_RUN = "mlflow.parentRunId"  # set by MLflow on child runs
TAG_ENTRY_POINT = "mlflow.project.entryPoint"  # set by `mlflow run`
TAG_RAY_NODE = "ray.node_id"  # on a training run trained by a Ray task: the node it ran on
TAG_RESUMED = "resumed"  # on a training run: one line per resume, after which epoch
TAG_RESUMED_RUN = "resumed_run_id"  # on the run `mlflow run` creates for a resume
TAG_REUSED_RUNS = "reused_run_ids"  # on a sweep: FINISHED runs it took instead of training
# On a comparison run: what it compared and what it picked.
TAG_COMPARED_RUNS = "compared_run_ids"  # comma-separated
TAG_EXCLUDED_RUNS = "excluded_run_ids"  # comma-separated, not FINISHED
TAG_CHAMPION_RUN = "champion_run_id"
TAG_CHAMPION_VERSION = "champion_version"

ROLE_TRAIN = "train"
ROLE_SWEEP = "sweep"
ROLE_COMPARISON = "comparison"
ROLE_RESUME = "resume"

# The experiment the study's runs go to unless MLflow is told otherwise, and the
# experiment tags MLflow's UI reads: its kind (which opens the experiment on its training
# runs rather than the GenAI overview) and its description.
EXPERIMENT_NAME = "latent-size-study"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_DESCRIPTION = "mlflow.note.content"  # Markdown, on experiments and runs alike

# Artifacts.
REPORT_TABLE = "report_table.json"  # the report, browsable as a table in the UI
RECONSTRUCTION_KEY = "reconstructions"  # step-wise image, one per epoch
RECONSTRUCTION_FILE = "reconstructions.png"  # final epoch's image
# The training state after the last recorded epoch (pipeline.training.attempt.Checkpoint), replaced
# every epoch: what a resume continues from.
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"

# Registry: a registered model per dataset; an alias per configuration and one for the pick.
DEFAULT_REGISTERED_MODEL = "mnist-autoencoder"
CHAMPION_ALIAS = "champion"
DEFAULT_DATASET = "mnist"  # whose runs keep their names without the dataset's


# MLproject's entry point that trains each model kind.
TRAIN_ENTRY_POINTS = {"conv": "train", "linear": "train_linear"}


def config_name(kind: str, latent_dim: int) -> str:
    """A configuration's name, e.g. "conv-d100": what the comparison groups seeds under."""
    return f"{kind}-d{latent_dim}"


def run_name(kind: str, latent_dim: int, seed: int, dataset: str = DEFAULT_DATASET) -> str:
    """The run name and registry alias of a configuration trained from a seed on a
    dataset, e.g. "conv-d100-s1" (MNIST's, as ever) or "fashion-mnist-conv-d100-s1"."""
    name = f"{config_name(kind, latent_dim)}-s{seed}"
    return name if dataset == DEFAULT_DATASET else f"{dataset}-{name}"


AUTO_REGISTERED_MODEL = "auto"
"""The registered_model parameter's default: each dataset's own (registered_model_for)."""


def names_one_model(given: str) -> bool:
    """Whether a registered_model parameter names a model, rather than each dataset's own
    (auto, or empty as `mlflow run` logs an empty parameter: '')."""
    return given.strip() not in ("", "''", '""', AUTO_REGISTERED_MODEL)


def registered_model_for(dataset: str, given: str = AUTO_REGISTERED_MODEL) -> str:
    """The registered model of a dataset's runs: the one given, else "<dataset>-autoencoder"."""
    return given if names_one_model(given) else f"{dataset}-autoencoder"


def dated_run_name(prefix: str) -> str:
    """A sweep's or comparison's run name: "sweep-2026-11-25-231204"."""
    return f"{prefix}-{datetime.now():%Y-%m-%d-%H%M%S}"
