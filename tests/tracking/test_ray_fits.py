"""Which steps a Ray cluster can ever run, from its nodes' resources as `ray.nodes()`
reports them: a step no node can hold is refused (tracking.ray_steps.check_fits)."""

import pytest

from pipeline.config import ClusterConfig, ConfigError
from tracking.ray_steps import check_fits

CPU_NODE = {"CPU": 16.0, "memory": 6.4e10, "node:10.0.0.1": 1.0}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:H200": 1.0}


@pytest.mark.parametrize(
    ("cpus", "gpus", "nodes"),
    [
        (1, 0, [CPU_NODE]),
        (16, 0, [CPU_NODE, GPU_NODE]),
        (1, 0.25, [CPU_NODE, GPU_NODE]),  # four steps share the GPU
        (8, 1, [GPU_NODE]),
    ],
)
def test_a_step_some_node_can_hold_is_let_through(cpus, gpus, nodes):
    check_fits(ClusterConfig(backend="ray", step_cpus=cpus, step_gpus=gpus), nodes)


@pytest.mark.parametrize(
    ("cpus", "gpus", "nodes", "message"),
    [
        (1, 1, [CPU_NODE], "step_gpus=1 is more than any node of the Ray cluster has (at most 0 "),
        (1, 2, [CPU_NODE, GPU_NODE], "step_gpus=2 is more than any node"),
        (32, 0, [CPU_NODE, GPU_NODE], "step_cpus=32 is more than any node"),
        (12, 1, [CPU_NODE, GPU_NODE], "no node of the Ray cluster has both step_cpus=12 CPUs"),
        (1, 0, [], "step_cpus=1 is more than any node"),
    ],
)
def test_a_step_no_node_can_hold_is_refused_naming_the_resource(cpus, gpus, nodes, message):
    with pytest.raises(ConfigError) as info:
        check_fits(ClusterConfig(backend="ray", step_cpus=cpus, step_gpus=gpus), nodes)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
