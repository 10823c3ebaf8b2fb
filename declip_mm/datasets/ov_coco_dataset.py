"""``OVCocoDataset``: mmdet's ``CocoDataset`` that refuses a label order other than its ``classes``.

mmdet 3.x numbers the labels in the order of the json's ``categories`` (filtered by ``classes``), not in the order of
the ``classes`` tuple; an open-vocabulary head's text-embedding columns follow ``classes``. A json listing its
categories in another order would silently pair boxes with the wrong class embeddings (and the wrong novel
weights); this dataset checks the pairing when it loads and names the first mismatch.
"""
from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO

from ..registry import DATASETS


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
            i = next((i for i, (a, b) in enumerate(zip(by_label, classes)) if a != b), min(len(by_label), len(classes)))
            raise ValueError(f"{self.ann_file}: label {i} would be the category '{by_label[i] if i < len(by_label) else None}' "
                             f"but classes[{i}] is '{classes[i] if i < len(classes) else None}': list the json's "
                             'categories in the order of classes (COCO-id order; tools/dataset_converters/ov_coco.py '
                             f'does), {len(by_label)} categories found for {len(classes)} classes')
        return data_list
