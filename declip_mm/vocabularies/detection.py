"""Detection class lists: the OV-COCO split (Bansal et al. 2018, as packaged by OVR-CNN and used by CLIPSelf's
F-ViT: 48 base / 17 novel = 65 classes), COCO's 80, the official LVIS v1 names, and :func:`class_names_from`, which
reads the class specs of the F-ViT heads and of ``tools/dump_class_embeddings.py``.

Class lists are in category-id order, which is mmdet's label order for a ``CocoDataset`` / ``LVISV1Dataset`` whose
json lists the categories in id order (the official files do).

LVIS names are the official ones (the categories of ``lvis_v1_{train,val}.json``, bundled as
``class_names/lvis_v1.txt``), not mmdet's ``LVISV1Dataset`` list: mmdet 3.3.0 spells category 655 (label 654)
'speaker_(stereo_equipment)' where the annotation files, and CLIPSelf's class-embedding files, say
'speaker_(stero_equipment)' (tests/datasets/test_lvis_names.py lists every difference).
"""
import json
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple, Union

from . import CLASS_NAME_DIR, read_class_file

# the official LVIS v1 names, one a line in id order ('#' lines are comments)
LVIS_V1_NAMES_FILE = CLASS_NAME_DIR / 'lvis_v1.txt'

# CLIPSelf F-ViT/datasets/mscoco_seen_classes.json / mscoco_unseen_classes.json (= OVR-CNN, ovdet keep_coco_*.py)
COCO_BASE_48 = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat', 'bench', 'bird', 'horse', 'sheep', 'bear',
    'zebra', 'giraffe', 'backpack', 'handbag', 'suitcase', 'frisbee', 'skis', 'kite', 'surfboard', 'bottle', 'fork',
    'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed',
    'toilet', 'tv', 'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster', 'refrigerator', 'book', 'clock',
    'vase', 'toothbrush')
COCO_NOVEL_17 = (
    'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie', 'snowboard', 'skateboard', 'cup', 'knife',
    'cake', 'couch', 'keyboard', 'sink', 'scissors')


def coco_80() -> tuple:
    from mmdet.datasets import CocoDataset
    return tuple(CocoDataset.METAINFO['classes'])


def ov_coco_65() -> tuple:
    """The 65 OV-COCO classes in COCO-id order (CLIPSelf ``mscoco_65_classes.json``)."""
    keep = set(COCO_BASE_48) | set(COCO_NOVEL_17)
    return tuple(c for c in coco_80() if c in keep)


def lvis_v1() -> tuple:
    """The 1203 LVIS v1 category names of the official annotation files, in id order (module doc: not mmdet's
    ``LVISV1Dataset`` list, which misspells one)."""
    names = tuple(read_class_file(LVIS_V1_NAMES_FILE))
    if len(names) != 1203:
        raise ValueError(f'{LVIS_V1_NAMES_FILE} holds {len(names)} LVIS v1 names, not 1203')
    return names


def class_names_from(spec: Union[str, Sequence[str]]) -> List[str]:
    """Class names in label order: 'ov_coco_65' / 'coco_80' / 'lvis_v1', a COCO/LVIS-format json (its
    ``categories`` sorted by id: the annotation file's own names), an LVIS category-info json (a list of
    categories, e.g. ``lvis_v1_train_cat_norare_info.json``), a text file (one name per line), or a list."""
    if not isinstance(spec, str):
        return list(spec)
    named = dict(ov_coco_65=ov_coco_65, coco_80=coco_80, lvis_v1=lvis_v1)
    if spec in named:
        return list(named[spec]())
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"classes '{spec}' is neither {sorted(named)} nor a file")
    if path.suffix == '.json':
        stat = path.stat()
        return list(_json_category_names(str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@lru_cache(maxsize=8)
def _json_category_names(path: str, mtime_ns: int, size: int) -> Tuple[str, ...]:
    """Category names of a json (cached per file version: the head, the API and the tools may all ask)."""
    with open(path) as f:
        data = json.load(f)
    categories = data.get('categories') if isinstance(data, dict) else data
    if not isinstance(categories, list) or not all(isinstance(c, dict) and 'id' in c and 'name' in c
                                                   for c in categories):
        raise KeyError(f"{path} has no 'categories' (a COCO/LVIS annotation file) and is not a list of categories "
                       "with 'id' and 'name' (an LVIS category-info json)")
    return tuple(c['name'] for c in sorted(categories, key=lambda c: c['id']))
