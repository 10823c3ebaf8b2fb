"""Build the OV-LVIS training files F-ViT uses, from LVIS v1's lvis_v1_train.json.

    python tools/dataset_converters/ov_lvis.py data/lvis_v1
    # reads  data/lvis_v1/annotations/lvis_v1_train.json
    # writes data/lvis_v1/annotations/lvis_v1_train_base.json          (rare annotations removed, 1203 categories)
    #        data/lvis_v1/annotations/lvis_v1_train_cat_norare_info.json (categories with image_count recounted:
    #                                                                   the classification weights, 0 = novel)
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse
import json
from pathlib import Path

from declip_mm.datasets.ov_detection import build_ov_lvis


def convert(root: str) -> dict:
    ann = Path(root) / 'annotations'
    src = ann / 'lvis_v1_train.json'
    if not src.is_file():
        raise FileNotFoundError(f'{src} not found: download the LVIS v1 annotations into {ann}')
    out = build_ov_lvis(json.loads(src.read_text()))
    (ann / 'lvis_v1_train_base.json').write_text(json.dumps(out))
    (ann / 'lvis_v1_train_cat_norare_info.json').write_text(json.dumps(out['categories']))
    return dict(annotations=len(out['annotations']), categories=len(out['categories']),
                novel=sum(c['image_count'] == 0 for c in out['categories']))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='LVIS root with annotations/lvis_v1_train.json')
    print(json.dumps(convert(parser.parse_args(argv).root)))


if __name__ == '__main__':
    main()
