"""Build the OV-COCO annotation files F-ViT trains and evaluates on, from COCO 2017's instances files.

    python tools/dataset_converters/ov_coco.py data/coco
    # reads  data/coco/annotations/instances_{train,val}2017.json
    # writes data/coco/zero-shot/instances_train2017_seen_2_65_cat.json   (65 categories, base annotations)
    #        data/coco/zero-shot/instances_val2017_all_2.json              (65 categories and their annotations)

The rule (declip_mm.datasets.ov_detection.build_ov_coco, from OVR-CNN's split as CLIPSelf packages it): keep the
65 OV-COCO categories in COCO-id order, keep the annotations of the allowed classes (base for training, all 65
for evaluation), keep the images that keep at least one annotation.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse
import json
from pathlib import Path

from declip_mm.datasets.ov_detection import build_ov_coco

OUTPUTS = {'train_seen_2_65_cat': ('instances_train2017.json', 'instances_train2017_seen_2_65_cat.json'),
           'val_all_2': ('instances_val2017.json', 'instances_val2017_all_2.json')}


def convert(root: str, splits=tuple(OUTPUTS)) -> dict:
    root = Path(root)
    (root / 'zero-shot').mkdir(exist_ok=True)
    summary = {}
    for split in splits:
        src_name, dst_name = OUTPUTS[split]
        src = root / 'annotations' / src_name
        if not src.is_file():
            raise FileNotFoundError(f'{src} not found: download COCO 2017 annotations into {root / "annotations"}')
        out = build_ov_coco(json.loads(src.read_text()), split)
        (root / 'zero-shot' / dst_name).write_text(json.dumps(out))
        summary[dst_name] = dict(images=len(out['images']), annotations=len(out['annotations']),
                                 categories=len(out['categories']))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='COCO root with annotations/instances_{train,val}2017.json')
    parser.add_argument('--splits', nargs='+', default=list(OUTPUTS), choices=list(OUTPUTS))
    args = parser.parse_args(argv)
    print(json.dumps(convert(args.root, args.splits), indent=1))


if __name__ == '__main__':
    main()
