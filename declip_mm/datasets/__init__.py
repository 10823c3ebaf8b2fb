"""Datasets: real sample data, distillation data, COCO-Object, COCO panoptic regions."""
from . import sample_data  # noqa: F401
from .coco_object import COCOObjectDataset
from .panoptic_regions import COCOPanopticRegionDataset, LoadPanopticSegmentIds, PackRegionInputs
from .distill_dataset import GRID_PAIRS, DeCLIPDistillDataset, declip_distill_collate
from .label_folder import LabelFolderSegDataset
from .ov_coco_dataset import OVCocoDataset

__all__ = ['DeCLIPDistillDataset', 'declip_distill_collate', 'GRID_PAIRS', 'COCOObjectDataset', 'COCOPanopticRegionDataset',
           'LoadPanopticSegmentIds', 'PackRegionInputs', 'OVCocoDataset', 'LabelFolderSegDataset']
