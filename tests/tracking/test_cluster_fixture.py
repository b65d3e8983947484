"""The Ray cluster fixture: two live nodes that both run tasks, a tracking server that the
nodes and this process reach, an address where nothing answers."""

from __future__ import annotations

import socket
import sys

import pytest
from mlflow import MlflowClient

from tests.cluster import RayCluster, unreachable_address

pytestmark = pytest.mark.slow

# Four one-CPU tasks on two one-CPU nodes: prints the ids of the nodes that ran them.
TASKS = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="error")

@ray.remote(num_cpus=1)
def where():
    time.sleep(1)
    return ray.get_runtime_context().get_node_id()

print(" ".join(sorted(set(ray.get([where.remote() for _ in range(4)])))))
"""

# From inside the namespace: the server's health and one API call (which, unlike /health,
# passes the server's Host header check).
REACH = """
import sys, urllib.request
from mlflow import MlflowClient
with urllib.request.urlopen(sys.argv[1] + "/health", timeout=10) as reply:
    print(reply.status, reply.read().decode())
print([e.name for e in MlflowClient(sys.argv[1]).search_experiments()])
"""


def test_tasks_run_on_both_nodes(ray_cluster: RayCluster):
    node_ids = ray_cluster.node_ids()
    assert len(set(node_ids)) == 2
    done = ray_cluster.run([sys.executable, "-c", TASKS, ray_cluster.address], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(done.stdout.split()) == sorted(node_ids)


def test_namespace_and_this_process_reach_the_server(ray_cluster: RayCluster):
    done = ray_cluster.run([sys.executable, "-c", REACH, ray_cluster.server_url], timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    health, names = done.stdout.splitlines()
    assert health == "200 OK"
    experiments = MlflowClient(ray_cluster.server_url).search_experiments()
    assert "Default" in names
    assert names == str([e.name for e in experiments])  # the same server from both sides


def test_unreachable_address_refuses():
    host, port = unreachable_address().split(":")
    assert host == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
        pass
