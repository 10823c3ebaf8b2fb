import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent
# the package and projects, tests' shared helpers (tiny_sd, reference/) and every test folder: tests mirror the
# package (tests/models/backbones/...) and import each other's helpers by module name (test file names are unique)
_TEST_DIRS = sorted({p.parent for p in (REPO / 'tests').rglob('test_*.py')} - {REPO / 'tests'})
for _path in (REPO, REPO / 'tests', *_TEST_DIRS):
    if str(_path) not in sys.path:
        sys.path.append(str(_path)) if _path in _TEST_DIRS else sys.path.insert(0, str(_path))

import declip_mm  # noqa: E402,F401
from declip_mm.constants import TINY_MODELS  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

# mmengine's default logger, made now: made inside a test that captures output (capsys), its handler would keep that
# test's stream, closed afterwards, and every later log line would print a 'Logging error' traceback instead
MMLogger.get_instance('mmengine')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than a few seconds (CI still runs it)')
    config.addinivalue_line('markers', 'reference: checks behaviour against the reference code or files '
                                       '(tests/reference/, tests/fixtures/reference/)')
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope='session')
def sample_root():
    from declip_mm.datasets.sample_data import fetch_sample_data
    return fetch_sample_data()


@pytest.fixture(scope='module')
def isolated_declip_cache(tmp_path_factory):
    """``$DECLIP_CACHE`` pointed at a fresh folder for one test module, so that the text-embedding caches of its
    random towers stay out of the user's cache (``pytestmark = pytest.mark.usefixtures('isolated_declip_cache')``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('DECLIP_CACHE', str(tmp_path_factory.mktemp('declip_cache')))
        yield


@pytest.fixture(params=TINY_MODELS)
def tiny_name(request):
    return request.param
