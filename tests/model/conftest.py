"""A random-weight tiny checkpoint shared by the engine tests."""

import pytest

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.random_init import write_random_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny"), tiny_config("tiny"), seed=0)
