"""``ProofWorldDataset``: one split of a proof world written by ``proof_world.world.write_world``, as an mmseg
dataset (``CLASS_NAMES``: 4 stuff then 12 thing classes, label 255 ignored), so that mmseg's ``IoUMetric`` and
``TrainingFreeSegmentor`` run on it unchanged.

Each data entry also carries the scene's ``caption``, its thing ``boxes`` (N, 4) xyxy and ``box_labels`` (N,)
from ``annotations.json`` (ignored by mmseg's transforms; region classification can read them).

The distillation data needs no dataset of its own: ``DeCLIPDistillDataset(data_root=<world>,
img_dir='train/images')`` lists the world's train images (labels and captions unused)::

    test_dataloader = dict(dataset=dict(type='ProofWorldDataset', data_root='<world>', split='val',
                                        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                                  dict(type='PackSegInputs')]))
"""
import json
from pathlib import Path
from typing import List

from declip_mm.registry import DATASETS
from mmseg.datasets import BaseSegDataset

from .world import CLASS_NAMES, IGNORE, PALETTE, SPLIT_STREAM, STAMP_FILE


@DATASETS.register_module()
class ProofWorldDataset(BaseSegDataset):
    """Args: ``data_root`` (the world's folder), ``split`` ('train' or 'val'), and mmseg's ``BaseSegDataset``
    arguments (``pipeline``, ``indices``, ...). Images and labels are ``<split>/{images,labels}/%05d.png``."""

    METAINFO = dict(classes=tuple(CLASS_NAMES), palette=PALETTE)

    def __init__(self, data_root: str, split: str = 'val', **kwargs):
        if split not in SPLIT_STREAM:
            raise ValueError(f"split must be one of {sorted(SPLIT_STREAM)}, got '{split}'")
        for key in ('data_prefix', 'img_suffix', 'seg_map_suffix', 'reduce_zero_label', 'ignore_index'):
            if key in kwargs:
                raise ValueError(f'ProofWorldDataset fixes {key}; do not pass it')
        if not (Path(data_root) / STAMP_FILE).is_file():
            raise FileNotFoundError(f'{data_root} is not a proof world (no {STAMP_FILE}); '
                                    'write it with projects.proof_world.proof_world.write_world or projects/proof_world/tools/pretrain_clip.py')
        self.split = split
        super().__init__(data_root=data_root, img_suffix='.png', seg_map_suffix='.png', reduce_zero_label=False,
                         ignore_index=IGNORE,
                         data_prefix=dict(img_path=f'{split}/images', seg_map_path=f'{split}/labels'),
                         **kwargs)

    def load_data_list(self) -> List[dict]:
        ann_file = Path(self.data_root) / self.split / 'annotations.json'
        if not ann_file.is_file():
            raise FileNotFoundError(f'annotation file not found: {ann_file}')
        annotations = json.loads(ann_file.read_text())
        if annotations.get('classes') != list(CLASS_NAMES):
            raise ValueError(f"{ann_file} was written with other classes ({annotations.get('classes')}); "
                             'rewrite the world with this version of projects.proof_world.proof_world.world')
        folder = Path(self.data_root) / self.split
        data_list = []
        for record in annotations['images']:
            img, seg = folder / record['file_name'], folder / record['label_file']
            for path in (img, seg):
                if not path.is_file():
                    raise FileNotFoundError(f'{ann_file} lists {path}, which does not exist')
            data_list.append(dict(img_path=str(img), seg_map_path=str(seg), label_map=self.label_map,
                                  reduce_zero_label=False, seg_fields=[], caption=record['caption'],
                                  boxes=record['boxes'], box_labels=record['box_labels']))
        return data_list
