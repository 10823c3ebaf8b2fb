"""The install script against what it must do: the mmcv wheel check (compiled ops present) on real and long listings,
and the install script using that check."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.reference


def make_wheel(path: Path, with_ops: bool, entries: int = 4000) -> Path:
    """A wheel-shaped zip with a long listing; the compiled op (when present) is among the FIRST entries, which
    is what broke `unzip -l | grep -q` under pipefail (grep exits early, unzip dies of SIGPIPE)."""
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('mmcv/__init__.py', '')
        if with_ops:
            z.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF')
        for i in range(entries):
            z.writestr(f'mmcv/ops/csrc/common/file_{i:05d}.hpp', '')
        z.writestr('mmcv-2.1.0.dist-info/RECORD', '')
    return path


def run_check(wheel) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'tools/install/check_mmcv_wheel.py'), str(wheel)],
                          capture_output=True, text=True)


def test_mmcv_wheel_check_on_long_listings(tmp_path):
    good = run_check(make_wheel(tmp_path / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl', with_ops=True))
    assert good.returncode == 0 and 'mmcv/_ext.cpython-311-x86_64-linux-gnu.so' in good.stdout
    lite = run_check(make_wheel(tmp_path / 'lite.whl', with_ops=False))
    assert lite.returncode == 1 and 'no compiled ops' in lite.stderr
    (tmp_path / 'broken.whl').write_bytes(b'not a zip')
    broken = run_check(tmp_path / 'broken.whl')
    assert broken.returncode == 2 and 'not a readable wheel' in broken.stderr


def test_mmcv_wheel_check_on_the_installed_wheel():
    """The real wheel this environment was installed from (cached by make install), when it is there."""
    import os
    cache = Path(os.environ.get('DECLIP_CACHE', Path.home() / '.cache' / 'declip-mm')) / 'wheels'
    wheels = sorted(cache.glob('mmcv-2.1.0/*/mmcv-2.1.0-*.whl'))
    if not wheels:
        pytest.skip(f'no cached mmcv wheel under {cache}')
    result = run_check(wheels[0])
    assert result.returncode == 0, result.stderr
    assert 'mmcv/_ext' in result.stdout


def test_install_script_uses_the_tested_wheel_check():
    script = (REPO / 'tools/install/setup_env.sh').read_text()
    assert script.count('run_logged "$ENV/bin/python" "$REPO/tools/install/check_mmcv_wheel.py" "$whl"') == 2
    assert 'unzip -l' not in script and '| grep -q' not in script
