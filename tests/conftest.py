import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s3_server import s3  # noqa: F401,E402  the session's local S3 server


@pytest.fixture
def data_root(tmp_path):
    return str(tmp_path / "jobs")
