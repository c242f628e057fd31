"""One Patroni cluster (three members, etcd, synchronous mode) and two RuPost nodes on it,
shared by every test of tests/ha (session scope: the cluster takes a minute to build).
Run under `flock /tmp/rupost-netns.lock`: it creates network namespaces and a bridge."""
from __future__ import annotations

import shutil

import pytest

from support.cluster import Cluster
from support.patroni import PatroniCluster


@pytest.fixture(scope="package")  # torn down before the rest of the suite runs
def patroni():
    for tool in ("ip", "patroni", "etcd", "patronictl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required for the database HA tests (scripts/install-deps --test)")
    p = PatroniCluster().start()
    yield p
    p.stop()


@pytest.fixture(scope="package")  # torn down before the rest of the suite runs
def ha_cluster(patroni):
    c = Cluster(size=2, ha=patroni).start()
    for node in c.nodes:
        node.start_agent()
    yield c
    c.stop()
