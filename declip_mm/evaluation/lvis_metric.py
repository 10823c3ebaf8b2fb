"""mmdet's ``LVISMetric`` for the locked stack: the official ``lvis`` API (0.5.3, the last release on PyPI) still
calls ``np.float``, which numpy >= 1.24 removed, in ``LVISEval.accumulate``. ``OVLVISMetric`` computes exactly
mmdet's metric with ``numpy.float`` provided as the builtin ``float`` (what it aliased) for the duration of
the call only."""
import contextlib

import numpy as np
from mmdet.evaluation import LVISMetric

from ..registry import METRICS


@contextlib.contextmanager
def numpy_float_alias():
    added = 'float' not in np.__dict__
    if added:
        np.float = float
    try:
        yield
    finally:
        if added:
            del np.float


@METRICS.register_module()
class OVLVISMetric(LVISMetric):
    """``LVISMetric`` (box / mask AP, APr / APc / APf with the lvis API) that runs with numpy 2 (module doc).

    Args:
        **kwargs: mmdet ``LVISMetric`` arguments, unchanged: ``ann_file`` (str, the LVIS v1 val json), ``metric``
            (str | list[str], 'bbox' and / or 'segm'; OV-LVIS reports mask APr), ``proposal_nums``,
            ``format_only``, ``outfile_prefix``, ``collect_device``, ``prefix``.
    """

    def compute_metrics(self, results: list) -> dict:
        with numpy_float_alias():
            return super().compute_metrics(results)
