"""Check that an mmcv wheel carries its compiled ops (``mmcv/_ext*.so`` or ``.pyd``).

Usage: ``python tools/install/check_mmcv_wheel.py WHEEL`` -> exit 0 when the ops are there, 1 when the
wheel is the ops-less "lite" build, 2 when the file is not a readable wheel.

Reads the wheel's whole listing with ``zipfile``; the earlier shell check (``unzip -l | grep -q`` under
``set -o pipefail``) failed on good wheels, because grep exits at the first match and unzip then dies of
SIGPIPE, failing the pipeline.
"""
import sys
import zipfile


def compiled_ops(wheel_path):
    """Names of the compiled-extension members (``mmcv/_ext...``) of the wheel at ``wheel_path``."""
    with zipfile.ZipFile(wheel_path) as wheel:
        return [name for name in wheel.namelist()
                if name.startswith('mmcv/_ext') and name.endswith(('.so', '.pyd'))]


def main(argv):
    if len(argv) != 2:
        print(f'usage: {argv[0]} WHEEL', file=sys.stderr)
        return 2
    try:
        found = compiled_ops(argv[1])
    except (OSError, zipfile.BadZipFile) as err:
        print(f'{argv[1]}: not a readable wheel ({err})', file=sys.stderr)
        return 2
    if not found:
        print(f'{argv[1]}: no compiled ops (mmcv/_ext*.so): was torch importable during the build?',
              file=sys.stderr)
        return 1
    print(f'{argv[1]}: compiled ops {", ".join(found)}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
