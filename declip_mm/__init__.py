"""declip-mm: DeCLIP decoupled CLIP dense features for OpenMMLab (mmengine, mmdet, mmseg).

Importing the package registers every module in the ``declip_mm`` registry scope (and, by bare name, in
the root registries mmdet and mmseg configs resolve through), and makes mmengine read local checkpoints
through the package's safe loader (``weights_only=True`` and an allow-list; ``declip_mm/utils/checkpoint_io.py``).
"""
from . import utils  # noqa: F401  (checkpoint loader first)
from . import registry  # noqa: F401
from . import apis, datasets, engine, evaluation, models  # noqa: F401

__version__ = '0.1.0'
