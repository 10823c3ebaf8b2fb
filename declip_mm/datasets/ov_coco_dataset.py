"""``OVCocoDataset`` / ``OVLVISV1Dataset``: mmdet's ``CocoDataset`` / ``LVISV1Dataset`` that refuse a label order
other than their ``classes``.

mmdet 3.x numbers the labels in the order of the json's ``categories`` (filtered by ``classes`` for COCO), not in the
order of the ``classes`` tuple; an open-vocabulary head's text-embedding columns follow ``classes``. A json listing its
categories in another order (or under other names) would silently pair boxes with the wrong class embeddings (and the
wrong novel weights); these datasets check the pairing when they load and name the first mismatch.

``OVLVISV1Dataset``'s classes are the official LVIS v1 names (``ov_detection.lvis_v1``), not mmdet's list, which
spells label 654 'speaker_(stereo_equipment)' where the annotation files say 'speaker_(stero_equipment)'.
"""
from mmdet.datasets import CocoDataset, LVISV1Dataset
from mmdet.datasets.api_wrappers import COCO

from ..registry import DATASETS
from .ov_detection import lvis_v1


def _first_mismatch(by_label, classes) -> int:
    return next((i for i, (a, b) in enumerate(zip(by_label, classes)) if a != b), min(len(by_label), len(classes)))


@DATASETS.register_module()
class OVCocoDataset(CocoDataset):
    """``CocoDataset`` whose label i is checked to be the category named ``classes[i]``."""

    def COCOAPI(self, path: str) -> COCO:  # noqa: N802  (mmdet's attribute name)
        api = COCO(path)
        self._category_names = {cat_id: cat['name'] for cat_id, cat in api.cats.items()}
        return api

    def load_data_list(self):
        data_list = super().load_data_list()
        by_label = [self._category_names[cat_id] for cat_id in self.cat_ids]
        classes = list(self.metainfo['classes'])
        if by_label != classes:
            i = _first_mismatch(by_label, classes)
            raise ValueError(f"{self.ann_file}: label {i} would be the category '{by_label[i] if i < len(by_label) else None}' "
                             f"but classes[{i}] is '{classes[i] if i < len(classes) else None}': list the json's "
                             'categories in the order of classes (COCO-id order; tools/dataset_converters/ov_coco.py '
                             f'does), {len(by_label)} categories found for {len(classes)} classes')
        return data_list


@DATASETS.register_module()
class OVLVISV1Dataset(LVISV1Dataset):
    """``LVISV1Dataset`` with the official category names as ``classes``, checking when the annotation file is read
    that label i is the category named ``classes[i]`` (the json's categories, in its order, are the labels)."""

    METAINFO = dict(LVISV1Dataset.METAINFO, classes=lvis_v1())

    @property
    def lvis(self):  # mmdet's load_data_list sets ``self.lvis = LVIS(path)``, reads it, then deletes it
        try:
            return self.__dict__['_lvis_api']
        except KeyError:
            raise AttributeError('lvis') from None

    @lvis.setter
    def lvis(self, api):
        by_label = [api.cats[cat_id]['name'] for cat_id in api.get_cat_ids()]
        classes = list(self.metainfo['classes'])
        if by_label != classes:
            i = _first_mismatch(by_label, classes)
            got = by_label[i] if i < len(by_label) else None
            want = classes[i] if i < len(classes) else None
            raise ValueError(f"{self.ann_file}: label {i} would be the category '{got}' but classes[{i}] is '{want}' "
                             f'({len(by_label)} categories found for {len(classes)} classes): give an LVIS v1 '
                             'annotation file with the official categories, listed in id order (classes are the '
                             'official LVIS v1 names, vocabularies/class_names/lvis_v1.txt)')
        self.__dict__['_lvis_api'] = api

    @lvis.deleter
    def lvis(self):
        self.__dict__.pop('_lvis_api', None)
