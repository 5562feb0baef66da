import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data_root(tmp_path):
    return str(tmp_path / "jobs")
