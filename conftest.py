import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent
for _path in (REPO, REPO / 'tests'):         # the package and projects, and tests' shared helpers (test_apis, ...)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import declip_mm  # noqa: E402,F401
from declip_mm.constants import TINY_MODELS  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

# mmengine's default logger, made now: made inside a test that captures output (capsys), its handler would keep that
# test's stream, closed afterwards, and every later log line would print a 'Logging error' traceback instead
MMLogger.get_instance('mmengine')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds (CI still runs it)')
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope='session')
def sample_root():
    from declip_mm.datasets.sample_data import fetch_sample_data
    return fetch_sample_data()


@pytest.fixture(params=TINY_MODELS)
def tiny_name(request):
    return request.param
