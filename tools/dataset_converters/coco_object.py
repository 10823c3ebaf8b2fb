"""Make COCO-Object label maps from COCO-Stuff-164k (prepared with mmseg's coco_stuff164k converter).

    python tools/dataset_converters/coco_object.py data/coco_stuff164k [--split val2017] [--nproc 8]

Reads annotations/<split>/*_labelTrainIds.png, writes annotations_object/<split>/*_objectTrainIds.png:
things 0..79 -> 1..80, stuff and unlabelled -> 0 (background).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from declip_mm.datasets.coco_object import stuff_to_object


def convert_one(args):
    src, dst = args
    Image.fromarray(stuff_to_object(np.array(Image.open(src)))).save(dst)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='COCO-Stuff-164k root (with annotations/<split>/*_labelTrainIds.png)')
    parser.add_argument('--split', default='val2017')
    parser.add_argument('--nproc', type=int, default=8)
    args = parser.parse_args(argv)
    src_dir = Path(args.root) / 'annotations' / args.split
    files = sorted(src_dir.glob('*_labelTrainIds.png'))
    if not files:
        raise SystemExit(f'no *_labelTrainIds.png in {src_dir}: prepare COCO-Stuff with mmseg\'s converter first')
    dst_dir = Path(args.root) / 'annotations_object' / args.split
    dst_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(f, dst_dir / f.name.replace('_labelTrainIds', '_objectTrainIds')) for f in files]
    with Pool(args.nproc) as pool:
        pool.map(convert_one, jobs, chunksize=64)
    print(f'wrote {len(jobs)} label maps to {dst_dir}')


if __name__ == '__main__':
    main()
