"""COCO panoptic regions for open-vocabulary region classification, as the authors' ``zero_shot.py`` (DeCLIP main
@2c0b3de ``src/training/data.py`` ``COCOPanopticDataset``, ``coco_api.py``, ``utils.py`` ``mask2box``; the
same as CLIPSelf's) builds them:

* the first 100 entries of each image's ``segments_info``, in file order, crowd segments included;
* things: the annotation ``bbox`` as [x, y, x + w, y + h]; stuff: the box of the mask with x2 = max column
  and y2 = max row (no + 1), w = x2 - x1, h = y2 - y1;
* regions with w * h < 8^2 are skipped (they still count towards the 100);
* labels index the categories sorted by id (COCO panoptic: 80 things, then 53 stuff = ``'coco_panoptic'``).

The image is resized so that its longest side is S (PIL bicubic, sizes rounded with Python's ``round``) and
padded right/bottom with black to S x S before normalisation (``ResizeLongestPad``); boxes are scaled by
S / max(h, w). Masks stay at the original resolution (the classifier brings them to the token grid).
"""
import json
from pathlib import Path
from typing import List

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmengine.structures import BaseDataElement

from ..registry import DATASETS, TRANSFORMS

MAX_SEGMENTS = 100     # data.py: max_anns = min(max #segments, 100), counted before the size filter
MIN_BOX_AREA = 8 ** 2  # data.py: min_size = 8 ("fix for val")


@DATASETS.register_module()
class COCOPanopticRegionDataset(BaseDataset):
    """Images of a COCO panoptic json with their segments (the first ``max_segments`` of ``segments_info``).

    Args:
        ann_file: panoptic json (e.g. annotations/panoptic_val2017.json).
        data_prefix: dict(img='val2017/', seg='annotations/panoptic_val2017/').
        max_segments: how many entries of ``segments_info`` are considered (100, the reference's cap).
    """

    def __init__(self, ann_file: str, data_prefix: dict = dict(img='val2017/', seg=''),
                 max_segments: int = MAX_SEGMENTS, **kwargs):
        self.max_segments = max_segments
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
        is_thing = tuple(bool(c.get('isthing', 1)) for c in categories)
        self._metainfo.update(classes=tuple(c['name'] for c in categories),
                              thing_classes=tuple(c['name'] for c, t in zip(categories, is_thing) if t),
                              is_thing=is_thing)
        images = {img['id']: img for img in data['images']}
        data_list = []
        for ann in sorted(data['annotations'], key=lambda a: a['image_id']):
            img = images[ann['image_id']]
            segments = ann['segments_info'][:self.max_segments]
            if not segments:
                continue
            labels = np.array([cat_index[s['category_id']] for s in segments], dtype=np.int64)
            data_list.append(dict(
                img_path=str(Path(self.data_prefix.get('img', '')) / img['file_name']),
                seg_map_path=str(Path(self.data_prefix.get('seg', '')) / ann['file_name']),
                img_id=img['id'],
                segment_ids=np.array([s['id'] for s in segments], dtype=np.int64),
                segment_bboxes=np.array([s['bbox'] for s in segments], dtype=np.float32).reshape(-1, 4),
                gt_labels=labels,
                is_thing=np.array([is_thing[k] for k in labels], dtype=bool)))
        return data_list


@TRANSFORMS.register_module()
class LoadPanopticSegmentIds(BaseTransform):
    """Read the panoptic PNG as segment ids (R + 256 G + 256^2 B) into ``gt_seg_map`` (original resolution)."""

    def transform(self, results: dict) -> dict:
        from PIL import Image
        rgb = np.array(Image.open(results['seg_map_path']).convert('RGB'), dtype=np.int64)
        results['gt_seg_map'] = (rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]).astype(np.int32)
        return results


def mask_box(mask: np.ndarray) -> np.ndarray:
    """[x1, y1, x2, y2] of a boolean mask with x2 / y2 the max column / row (the reference's ``mask2box``)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


@TRANSFORMS.register_module()
class PanopticRegionBoxes(BaseTransform):
    """Segments -> regions: boxes (things: annotation bbox; stuff: mask box without + 1) in original pixels,
    regions with box area below ``min_area`` dropped. Needs ``gt_seg_map`` (``LoadPanopticSegmentIds``)."""

    def __init__(self, min_area: float = MIN_BOX_AREA):
        self.min_area = min_area

    def transform(self, results: dict) -> dict:
        ids = results['gt_seg_map']
        boxes = []
        for seg_id, bbox, thing in zip(results['segment_ids'], results['segment_bboxes'], results['is_thing']):
            if thing:
                boxes.append(np.array([bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]], np.float32))
            elif (ids == seg_id).any():
                boxes.append(mask_box(ids == seg_id))
            else:
                raise ValueError(f"{results['seg_map_path']}: stuff segment {seg_id} has no pixel in the PNG")
        boxes = np.stack(boxes).reshape(-1, 4)
        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= self.min_area
        results['gt_bboxes'] = boxes[keep]
        for key in ('gt_labels', 'is_thing', 'segment_ids'):
            results[key] = results[key][keep]
        return results


@TRANSFORMS.register_module()
class ResizeLongestPad(BaseTransform):
    """Longest side -> ``size`` (PIL bicubic; each side round(side * size / max(h, w)), Python rounding), then
    zero (black) padding right/bottom to size x size, before normalisation. Boxes are scaled by
    size / max(h, w); ``gt_seg_map`` is left at the original resolution."""

    def __init__(self, size: int, interpolation: str = 'bicubic'):
        self.size, self.interpolation = size, interpolation

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        scale = self.size / max(h, w)
        new_h, new_w = round(h * scale), round(w * scale)
        if (new_h, new_w) != (h, w):
            img = mmcv.imresize(img, (new_w, new_h), interpolation=self.interpolation, backend='pillow')
        canvas = np.zeros((self.size, self.size, *img.shape[2:]), dtype=img.dtype)
        canvas[:new_h, :new_w] = img
        results['img'] = canvas
        results['img_shape'] = (new_h, new_w)
        results['pad_shape'] = canvas.shape[:2]
        results['scale_factor'] = (scale, scale)
        if 'gt_bboxes' in results:
            results['gt_bboxes'] = (results['gt_bboxes'] * np.float32(scale)).astype(np.float32)
        return results


@TRANSFORMS.register_module()
class PackRegionInputs(BaseTransform):
    """Image -> uint8 (3, H, W) tensor; regions (boxes in network-input pixels, labels, thing flags, and with a
    segment-id map its ids at the original resolution) -> a BaseDataElement."""

    def transform(self, results: dict) -> dict:
        img = results['img']
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = BaseDataElement(metainfo=dict(img_path=results['img_path'], img_id=results.get('img_id'),
                                               img_shape=results.get('img_shape', img.shape[:2]),
                                               ori_shape=results.get('ori_shape')))
        sample.gt_bboxes = torch.as_tensor(results['gt_bboxes'], dtype=torch.float32).reshape(-1, 4)
        sample.gt_labels = torch.as_tensor(results['gt_labels'])
        sample.is_thing = torch.as_tensor(results['is_thing'], dtype=torch.bool)
        if 'gt_seg_map' in results:
            sample.segment_ids = torch.as_tensor(results['segment_ids'])
            sample.gt_seg_map = torch.from_numpy(results['gt_seg_map'].astype(np.int64))
        return dict(inputs=inputs, data_samples=sample)
