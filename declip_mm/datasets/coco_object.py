"""COCO-Object: COCO val2017 with the 80 thing classes and a background class (label 0).

The label maps (``<image id>_objectTrainIds.png``) are made from COCO-Stuff-164k's ``_labelTrainIds.png``
by ``tools/dataset_converters/coco_object.py``: thing ids 0..79 -> 1..80, stuff ids and unlabelled pixels
-> 0 (background), as for label maps painted from COCO's instance masks.
"""
from mmseg.datasets import BaseSegDataset, COCOStuffDataset

from ..registry import DATASETS

THING_CLASSES = COCOStuffDataset.METAINFO['classes'][:80]


def stuff_to_object(label):
    """COCO-Stuff train ids (H, W) uint8 -> COCO-Object ids: things 0..79 -> 1..80, everything else -> 0."""
    import numpy as np
    out = np.zeros_like(label)
    things = label < 80
    out[things] = label[things] + 1
    return out


@DATASETS.register_module()
class COCOObjectDataset(BaseSegDataset):
    METAINFO = dict(classes=('background',) + tuple(THING_CLASSES),
                    palette=[[0, 0, 0]] + COCOStuffDataset.METAINFO['palette'][:80])

    def __init__(self, img_suffix='.jpg', seg_map_suffix='_objectTrainIds.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
