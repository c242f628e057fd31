"""A two-node cluster in network namespaces, shared by the cluster tests of a module."""
from __future__ import annotations

import shutil

import pytest

from support.cluster import Cluster


@pytest.fixture(scope="package")  # torn down before the rest of the suite runs
def cluster():
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (ip) is required for the cluster tests")
    c = Cluster(size=2).start()
    yield c
    c.stop()
