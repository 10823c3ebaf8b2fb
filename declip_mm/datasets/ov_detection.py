"""Open-vocabulary detection data conventions (docs/detection.md): the OV-COCO split (Bansal et al. 2018, as
packaged by OVR-CNN and used by CLIPSelf's F-ViT: 48 base / 17 novel = 65 classes), its annotation files, and
class lists for the class-embedding tool.

Class lists are in category-id order, which is mmdet's label order for a ``CocoDataset`` / ``LVISV1Dataset`` whose
json lists the categories in id order (the official files do).

LVIS names are the official ones (the categories of ``lvis_v1_{train,val}.json``, bundled as
``vocabularies/class_names/lvis_v1.txt``), not mmdet's ``LVISV1Dataset`` list: mmdet 3.3.0 spells category 655
(label 654) 'speaker_(stereo_equipment)' where the annotation files, and CLIPSelf's class-embedding files, say
'speaker_(stero_equipment)' (tests/datasets/test_lvis_names.py lists every difference).
"""
from typing import Dict, List

# the class lists live with every other bundled list (declip_mm/vocabularies/detection.py); imported here
# under their old names
from ..vocabularies.detection import (COCO_BASE_48, COCO_NOVEL_17, LVIS_V1_NAMES_FILE,  # noqa: F401
                                      class_names_from, coco_80, lvis_v1, ov_coco_65)


def ov_coco_class_weight(bg_weight: float = 0.6) -> List[float]:
    """The F-ViT OV-COCO classification weights: 1 for base, 0 for novel (65, id order), then background."""
    return [0.0 if c in COCO_NOVEL_17 else 1.0 for c in ov_coco_65()] + [bg_weight]


def ov_coco_metainfo() -> dict:
    """Dataset metainfo for mmdet's ``CocoDataset`` and ``OVCocoMetric`` (classes, base_classes, novel_classes)."""
    classes = ov_coco_65()
    return dict(classes=classes, base_classes=tuple(c for c in classes if c in COCO_BASE_48),
                novel_classes=tuple(c for c in classes if c in COCO_NOVEL_17))


def build_ov_coco(instances: Dict, split: str) -> Dict:
    """An OV-COCO annotation file from a COCO ``instances_*2017.json`` dict (OVR-CNN's rule, see the converter).

    split 'train_seen_2_65_cat': the 65 categories listed, annotations of the 48 base classes only;
    split 'val_all_2': the 65 categories, their annotations. Images are kept only when they keep at least one
    annotation. Crowd annotations are kept as they are (COCOeval ignores them; mmdet skips them in training).
    """
    if split not in ('train_seen_2_65_cat', 'val_all_2'):
        raise ValueError(f"split must be 'train_seen_2_65_cat' or 'val_all_2', got '{split}'")
    for key in ('images', 'annotations', 'categories'):
        if key not in instances:
            raise KeyError(f"the instances json has no '{key}'")
    names65 = set(ov_coco_65())
    allowed = set(COCO_BASE_48) if split.startswith('train') else names65
    categories = sorted((c for c in instances['categories'] if c['name'] in names65), key=lambda c: c['id'])
    if len(categories) != 65:
        raise ValueError(f'the instances json has {len(categories)} of the 65 OV-COCO categories')
    kept_ids = {c['id'] for c in categories if c['name'] in allowed}
    annotations = [a for a in instances['annotations'] if a['category_id'] in kept_ids]
    image_ids = {a['image_id'] for a in annotations}
    images = [img for img in instances['images'] if img['id'] in image_ids]
    out = {k: v for k, v in instances.items() if k not in ('images', 'annotations', 'categories')}
    out.update(images=images, annotations=annotations, categories=categories)
    return out


def build_ov_lvis(train: Dict) -> Dict:
    """OV-LVIS training annotations from ``lvis_v1_train.json`` (rare = novel, common + frequent = base; CLIPSelf's
    ``lvis_v1_train_seen_1203_cat.json`` / Detic's ``lvis_v1_train_norare.json``): every annotation of a rare
    ('r') category removed, all 1203 categories kept, each with ``image_count`` / ``instance_count`` recounted on
    what is left (0 exactly for the rare ones: F-ViT's class weights). Images are all kept (mmdet drops the ones
    left without annotations with ``filter_empty_gt``)."""
    for key in ('images', 'annotations', 'categories'):
        if key not in train:
            raise KeyError(f"the LVIS json has no '{key}'")
    rare = {c['id'] for c in train['categories'] if c.get('frequency') == 'r'}
    if not rare:
        raise ValueError("the LVIS json marks no category as rare (frequency 'r'): expected lvis_v1_train.json")
    annotations = [a for a in train['annotations'] if a['category_id'] not in rare]
    images_of, instances_of = {}, {}
    for a in annotations:
        images_of.setdefault(a['category_id'], set()).add(a['image_id'])
        instances_of[a['category_id']] = instances_of.get(a['category_id'], 0) + 1
    categories = [dict(c, image_count=len(images_of.get(c['id'], ())), instance_count=instances_of.get(c['id'], 0))
                  for c in sorted(train['categories'], key=lambda c: c['id'])]
    out = {k: v for k, v in train.items() if k not in ('annotations', 'categories')}
    out.update(annotations=annotations, categories=categories)
    return out
