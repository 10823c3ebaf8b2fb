"""Datasets: real sample data, distillation data; open-vocabulary datasets with the evaluation issue."""
from . import sample_data  # noqa: F401
from .distill_dataset import GRID_PAIRS, DeCLIPDistillDataset, declip_distill_collate

__all__ = ['DeCLIPDistillDataset', 'declip_distill_collate', 'GRID_PAIRS']
