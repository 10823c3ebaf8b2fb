"""COCO panoptic regions for open-vocabulary region classification (METHOD.md section 5).

Each (non-crowd) segment of a COCO panoptic image is a region: things with their GT box, stuff with the box
of its mask (COCO panoptic stores both as ``segments_info[*].bbox``); optionally its mask. Labels index the
categories sorted by id (COCO panoptic: 80 things, then 53 stuff = ``class_names='coco_panoptic'``).
"""
import json
from pathlib import Path
from typing import List

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmengine.structures import BaseDataElement

from ..registry import DATASETS, TRANSFORMS


@DATASETS.register_module()
class COCOPanopticRegionDataset(BaseDataset):
    """Images of a COCO panoptic json with their regions.

    Args:
        ann_file: panoptic json (e.g. annotations/panoptic_val2017.json).
        data_prefix: dict(img='val2017/', seg='annotations/panoptic_val2017/') (seg only needed for masks).
    """

    def __init__(self, ann_file: str, data_prefix: dict = dict(img='val2017/', seg=''), **kwargs):
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not Path(self.ann_file).is_file():
            raise FileNotFoundError(f'panoptic annotation file not found: {self.ann_file}')
        with open(self.ann_file) as f:
            data = json.load(f)
        for key in ('images', 'annotations', 'categories'):
            if key not in data:
                raise KeyError(f"{self.ann_file} has no '{key}': expected a COCO panoptic json")
        categories = sorted(data['categories'], key=lambda c: c['id'])
        cat_index = {c['id']: i for i, c in enumerate(categories)}
        self._metainfo.update(classes=tuple(c['name'] for c in categories),
                              thing_classes=tuple(c['name'] for c in categories if c.get('isthing', 1)),
                              is_thing=tuple(bool(c.get('isthing', 1)) for c in categories))
        images = {img['id']: img for img in data['images']}
        data_list = []
        for ann in sorted(data['annotations'], key=lambda a: a['image_id']):
            img = images[ann['image_id']]
            segments = [s for s in ann['segments_info'] if not s.get('iscrowd', 0)]
            if not segments:
                continue
            boxes = np.array([s['bbox'] for s in segments], dtype=np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]                                  # xywh -> xyxy
            data_list.append(dict(
                img_path=str(Path(self.data_prefix.get('img', '')) / img['file_name']),
                seg_map_path=str(Path(self.data_prefix.get('seg', '')) / ann['file_name']),
                img_id=img['id'], gt_bboxes=boxes,
                gt_labels=np.array([cat_index[s['category_id']] for s in segments], dtype=np.int64),
                segment_ids=np.array([s['id'] for s in segments], dtype=np.int64),
                is_thing=np.array([self._metainfo['is_thing'][cat_index[s['category_id']]] for s in segments])))
        return data_list


@TRANSFORMS.register_module()
class LoadPanopticSegmentIds(BaseTransform):
    """Read the panoptic PNG as segment ids (R + 256 G + 256^2 B) into ``gt_seg_map`` (for mask pooling)."""

    def transform(self, results: dict) -> dict:
        from PIL import Image
        rgb = np.array(Image.open(results['seg_map_path']).convert('RGB'), dtype=np.int64)
        results['gt_seg_map'] = (rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]).astype(np.int32)
        return results


@TRANSFORMS.register_module()
class PackRegionInputs(BaseTransform):
    """Image -> uint8 (3, H, W) tensor; regions (boxes in resized-image pixels, labels, thing flags, optional
    segment-id map) -> a BaseDataElement."""

    def transform(self, results: dict) -> dict:
        img = results['img']
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = BaseDataElement(metainfo=dict(img_path=results['img_path'], img_id=results.get('img_id'),
                                               img_shape=img.shape[:2], ori_shape=results.get('ori_shape')))
        sample.gt_bboxes = torch.as_tensor(results['gt_bboxes'], dtype=torch.float32).reshape(-1, 4)
        sample.gt_labels = torch.as_tensor(results['gt_labels'])
        sample.is_thing = torch.as_tensor(results['is_thing'], dtype=torch.bool)
        if 'gt_seg_map' in results:
            sample.segment_ids = torch.as_tensor(results['segment_ids'])
            sample.gt_seg_map = torch.from_numpy(results['gt_seg_map'].astype(np.int64))
        return dict(inputs=inputs, data_samples=sample)
