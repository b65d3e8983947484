"""Each benchmark run as a user runs it, on a tiny size, so that none of them can rot.

They must finish and print their figures; no test asserts a time. Each runs in an empty
folder with no MLflow variables inherited, and must leave that folder empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.study import job_env, main_job
from pipeline.training.hardware import auto_precision, bf16_supported
from tracking.host import KERNEL_LIMITS, cpu_model

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run_benchmark(name: str, *args: str, cwd: Path, limits: dict[str, str] | None = None) -> str:
    """`python -m benchmarks.NAME ARGS` in cwd, with kernel limits in its environment if
    given; its output, once it exited 0 leaving cwd empty."""
    inherited = os.environ.items()
    env = {k: v for k, v in inherited if not k.startswith("MLFLOW_") and k not in KERNEL_LIMITS}
    env |= limits or {}
    env.update(PYTHONPATH=str(REPO_ROOT), PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    return result.stdout


def here() -> tuple[str, ...]:
    """The precisions the benchmarks measure on this CPU by default."""
    return ("fp32", "bf16") if bf16_supported(torch.device("cpu")) else ("fp32",)


def test_epoch_benchmark_prints_both_precisions_speed_up_and_floor_of_both_models(
    tmp_path, mnist_dir
):
    sizes = ["--train-limit", "1024", "--test-limit", "256", "--data-dir", str(mnist_dir)]
    out = run_benchmark("epoch", "--epochs", "1", *sizes, cwd=tmp_path)
    assert out.startswith(f"host: {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}, ")
    assert "conv d=100" in out and "linear d=10" in out
    assert out.count("median epoch: reference") == 2
    assert out.count("test MSE after 1 epochs: reference") == 2
    sides = [line.split() for line in out.splitlines() if line.startswith("  ")]
    rows = [row for row in sides if row[0] in ("reference", *here()) and row[1] != "/"]
    assert [row[0] for row in rows] == ["reference", *here()] * 2
    for row in rows:  # median, with evaluation, speed-up, test MSE, the epoch
        assert float(row[1]) > 0 and row[3].endswith("x") and 0 < float(row[4]) < 1
        assert row[2] == "-" if row[0] == "reference" else float(row[2]) >= float(row[1])
    assert out.count("bf16 / fp32: epoch") == (2 if "bf16" in here() else 0)
    floors = [line for line in out.splitlines() if "arithmetic floor:" in line]
    assert len(floors) == 2 and all(
        "GFLOP/s" in line and "over the reference" in line for line in floors
    )


def test_study_benchmark_prints_wall_time_memory_and_overhead(tmp_path):
    params = ["latent_dims=3", "epochs=1", "train_limit=1024", "test_limit=256"]
    out = run_benchmark("study", *(a for p in params for a in ("-P", p)), cwd=tmp_path)
    (job,) = [line for line in out.splitlines() if line.startswith("main job: exit 0, wall time")]
    assert "peak memory" in job
    for model in ("conv-d3-s0", "linear-d10-s0"):
        assert any(line.split()[:2] == [model, "tracking"] for line in out.splitlines()), model
    assert "tracking overhead, all runs:" in out
    (study,) = [line.split() for line in out.splitlines() if "study overhead: wall time" in line]
    wall, epochs, ratio = float(study[4]), float(study[7]), float(study[11].rstrip("x"))
    assert 0 < epochs < wall, study
    half = 0.05  # both printed to 0.1 s
    assert (wall - half) / (epochs + half) <= ratio <= (wall + half) / (epochs - half), study
    assert "host: " in out and "highest epoch-1 test MSE of any run:" in out
    for config in ("conv-d3", "linear-d10"):  # the results, per configuration
        assert any(line.split()[:3] == [config, "test", "MSE"] for line in out.splitlines())
    (sweep,) = [line for line in out.splitlines() if "sweep (training steps" in line]
    assert 0 < float(sweep.split(": ")[1].split()[0]) < wall
    assert f"on {cpu_model()}, " in sweep and "no GPU" in sweep


def test_the_main_job_starts_mlflow_as_a_module_of_this_python(tmp_path):
    """As on the GPU machine, where `pip --target` puts mlflow's console script far from
    the interpreter: with no `mlflow` to find on PATH, the job's command still starts it."""
    cmd = main_job(["epochs=1"])
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "run"]
    env = {**job_env(), "PATH": os.defpath}
    assert not any((Path(folder) / "mlflow").exists() for folder in os.defpath.split(os.pathsep))
    result = subprocess.run(
        [*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage: python -m mlflow run" in result.stdout and "--entry-point" in result.stdout


def test_gpu_harness_stops_at_once_without_cuda(tmp_path):
    """One clear line and a non-zero exit, before any part runs or writes a file."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the harness would run")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu.sh")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"benchmarks/gpu.sh: no CUDA device here (torch.cuda.is_available() is False in "
        f"{sys.executable}): run it on the GPU machine"
    ]
    assert list(tmp_path.iterdir()) == []


def test_repeat_benchmark_trains_the_same_study_twice_and_finds_the_same_bits(tmp_path):
    params = ["latent_dims=3", "epochs=1", "train_limit=1024", "test_limit=256"]
    out = run_benchmark("repeat", *(a for p in params for a in ("-P", p)), cwd=tmp_path)
    rows = [line.split() for line in out.splitlines() if line.split()[1:3] == ["seed", "0:"]]
    assert sorted(row[0] for row in rows) == ["conv-d3", "linear-d10"]
    assert all(row[3] == row[4] and row[-1] == "same" for row in rows), rows  # the CPU's bits
    assert "the same seed gave the same final test MSE at every run: yes" in out
    assert out.count("main job ") == 2 and len(out.split("  sweep ")) == 3


def test_step_benchmark_times_the_eager_step_where_there_are_no_graphs(tmp_path):
    args = ("--device", "cpu", "--batches", "32,64", "--warmup", "1", "--repeats", "3")
    out = run_benchmark("step", *args, cwd=tmp_path)
    assert out.startswith(f"device: {cpu_model()}, ") and "no CUDA here: eager rows only" in out
    rows = [row for row in map(str.split, out.splitlines()) if row[2:3] == ["eager"]]
    assert {(row[0], row[1], row[2]) for row in rows} == {
        (p, b, "eager") for p in here() for b in ("32", "64")
    }
    assert all(row[3] == "deterministic" and float(row[-1]) > 0 for row in rows)


def test_step_probe_reports_versions_and_each_precision_alone(tmp_path):
    """On the CPU the probe's steps are eager; bf16 without kernels still runs (slowly,
    in reference loops) or fails alone. Either way every row is reported."""
    out = run_benchmark("step", "--probe", "--device", "cpu", cwd=tmp_path)
    assert out.startswith(f"device: {cpu_model()}, ") and f"torch {torch.__version__}, CUDA" in out
    rows = [row for row in map(str.split, out.splitlines()) if row[1:3] == ["128", "eager"]]
    assert [row[0] for row in rows] == ["fp32", "bf16"]


def test_compare_benchmark_times_a_finished_comparison_of_every_run(tmp_path, mnist_dir):
    out = run_benchmark(
        "compare", "--runs", "12", "--epochs", "2", "--data-dir", str(mnist_dir), cwd=tmp_path
    )
    assert "store: 12 finished training runs of 2 epochs (5 trained, 7 copies)" in out
    assert "compare --all-finished: exit 0, FINISHED, wall time" in out
    assert "the 30 s target" in out
    assert "runs.csv 12 rows (12 distinct runs:" in out


def test_health_benchmark_prints_a_verdict_per_latent_size_and_seed(tmp_path, mnist_dir):
    sizes = ["--train-limit", "1024", "--data-dir", str(mnist_dir), "--steps", "200"]
    out = run_benchmark("health", "--dims", "3", "--seeds", "0,1", *sizes, cwd=tmp_path)
    assert (
        f"init he; precision auto ({auto_precision(torch.device('cpu'))}); window 200 steps" in out
    )
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["3"]]
    assert [row[1] for row in rows] == ["0", "1"]
    assert all(row[2] in ("healthy", "constant", "plateau") and row[3] == "200" for row in rows)
    for row in rows:  # the ratio at each of 8 looks (c: constant), the test MSE, the outcome
        ratios = [float(v.rstrip("c")) for v in row[6:14]]
        assert len(ratios) == 8 and all(r > 0 for r in ratios) and 0 < float(row[14]) < 1
        assert row[15] in ("learned", "stuck", "late")


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="no bf16 kernels on this CPU")
def test_health_benchmark_trains_in_bf16_and_judges_in_float32(tmp_path, mnist_dir):
    sizes = ["--train-limit", "1024", "--data-dir", str(mnist_dir), "--steps", "200"]
    args = ("--dims", "3", "--seeds", "0", "--precision", "bf16", *sizes)
    out = run_benchmark("health", *args, cwd=tmp_path)
    assert "init he; precision bf16 (bf16); window 200 steps" in out
    (row,) = [line.split() for line in out.splitlines() if line.split()[:2] == ["3", "0"]]
    assert row[2] in ("healthy", "constant", "plateau") and 0 < float(row[14]) < 1


def test_precision_benchmark_prints_the_rule_per_configuration(tmp_path):
    params = ["latent_dims=3", "seeds=0,1", "epochs=1", "train_limit=1024", "test_limit=256"]
    args = [a for p in params for a in ("-P", p)]
    if not bf16_supported(torch.device("cpu")):  # refused before any job starts
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.precision", *args],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        assert result.returncode == 2 and "precision must be auto or fp32 here" in result.stderr
        assert list(tmp_path.iterdir()) == []
        return
    out = run_benchmark("precision", *args, cwd=tmp_path)
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split()[:1] in (["conv-d3"], ["linear-d10"])}  # fmt: skip
    assert sorted(rows) == ["conv-d3", "linear-d10"]
    for row in rows.values():  # two seeds in each precision, both means, the difference
        fp32 = [float(v.rstrip(",")) for v in row[1:3]]
        bf16 = [float(v.rstrip(",")) for v in row[4:6]]
        assert float(row[3]) == pytest.approx(sum(fp32) / 2, abs=1e-5)
        assert float(row[6]) == pytest.approx(sum(bf16) / 2, abs=1e-5)
        assert row[7].endswith("%") and row[-1] in ("True", "False")
    assert "fp32 main job" in out and "bf16 main job" in out
    verdict = all(row[-1] == "True" for row in rows.values())
    assert f"bf16 passes the rule at every configuration: {'yes' if verdict else 'NO'}" in out


def test_train_process_benchmark_prints_what_lies_beyond_the_epochs(tmp_path, mnist_dir):
    sizes = ["--epochs", "1", "--train-limit", "1024", "--data-dir", str(mnist_dir)]
    out = run_benchmark("train_process", "--runs", "1", *sizes, cwd=tmp_path)
    (run,) = [line.split() for line in out.splitlines() if line.startswith("  run 1")]
    wall, epochs, beyond = float(run[6]), float(run[9]), float(run[12])
    assert 0 < epochs < wall and beyond == pytest.approx(wall - epochs, abs=0.11), run
    assert f"most beyond the epochs: {beyond:.1f} s (target <= 15 s:" in out


AVX2_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


@pytest.mark.parametrize("limits", [{}, AVX2_KERNELS], ids=["native", "avx2-kernels"])
def test_layer_benchmark_checks_and_times_every_formulation_of_every_layer(tmp_path, limits):
    """Also as the README runs it on an AVX-512 host to profile the AVX2 kernels: the
    host line then names the limits."""
    out = run_benchmark("layers", "--repeats", "2", cwd=tmp_path, limits=limits)
    precisions = ("fp32",) if limits else here()  # oneDNN held to AVX2 has no bf16 kernels
    rows = [line.split() for line in out.splitlines() if line.startswith(("encoder", "decoder"))]
    forms = [(row[0], row[3], row[4]) for row in rows]
    assert len({name for name, _, _ in forms}) == 8  # 3 conv, 2 linear, 3 transposed conv
    assert sum(form == "matmul" for _, form, _ in forms) == 6
    assert sum(form == "fold" for _, form, _ in forms) == 3
    for precision in precisions:
        assert sum((f, p) == ("module", precision) for _, f, p in forms) == 8, precision
        assert f"whole training step, {precision}:" in out
    assert {p for _, _, p in forms} == set(precisions) and "x the floor" in out
    rest = [line.split() for line in out.splitlines() if line.startswith(("elementwise", "loss"))]
    assert sorted(row[-3] for row in rest) == sorted(precisions * 2)
    assert sum(line.startswith("adam: fused step") for line in out.splitlines()) == 1
    named = ", ".join(f"{k}={v}" for k, v in limits.items())
    host = f"AVX2 ({named})" if limits else torch.backends.cpu.get_cpu_capability()
    assert out.startswith(f"host: {host}, ")
    assert ("bf16 left out: precision must be auto or fp32 here" in out) == (
        "bf16" not in precisions
    )


def test_datasets_benchmark_prints_both_pairs_and_their_ratios(tmp_path, mnist_dir, fashion_dir):
    assert mnist_dir == fashion_dir  # one data dir holds both
    sizes = ["--train-limit", "512", "--data-dir", str(mnist_dir), "--latent-dim", "10"]
    out = run_benchmark("datasets", "--epochs", "2", *sizes, cwd=tmp_path)
    assert out.startswith(f"host: {cpu_model()}, {torch.backends.cpu.get_cpu_capability()}")
    for side in ("mnist", "fashion-mnist", "1x28x28", "3x32x32"):
        assert f"{side}: median " in out
    assert "fashion-mnist / mnist: " in out and "3x32x32 / 1x28x28: " in out
