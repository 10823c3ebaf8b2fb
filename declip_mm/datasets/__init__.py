"""Datasets: real sample data now; distillation and open-vocabulary datasets with later issues."""
from . import sample_data  # noqa: F401
