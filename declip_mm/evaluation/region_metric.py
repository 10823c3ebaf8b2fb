"""Region classification metric: mean per-class top-1 / top-5 accuracy, for thing, stuff and all classes.

As the authors' ``macc_with_is_thing`` (DeCLIP main @2c0b3de ``src/training/zero_shot.py``, the same as
CLIPSelf's): for every class with at least one GT region, its accuracy is the fraction of its regions whose
label is the top-1 prediction (or among the top 5), rounded through float16 as the reference does
(``.mean().half()``); the reported number is the mean over those classes, in percent. Things and stuff are
the published numbers; 'all' (every class) is an extra.
"""
from collections import defaultdict
from typing import Sequence

import numpy as np

from mmengine.evaluator import BaseMetric

from ..registry import METRICS


@METRICS.register_module()
class RegionClassificationMetric(BaseMetric):
    """Mean per-class top-k region accuracy (module doc), for thing, stuff and all classes: keys
    ``region/thing_top1``, ``region/stuff_top1``, ``region/all_top1``, ... and ``region/num_regions``.

    Each data sample holds ``gt_labels``, ``is_thing`` and ``pred_topk`` (the ranked classes per region), as
    :class:`RegionClassifier` writes them.

    Args:
        topk (Sequence[int]): the k of the top-k accuracies; the classifier must predict at least max(topk)
            classes. Defaults to (1, 5).
        **kwargs: mmengine ``BaseMetric`` arguments (``collect_device``, ``prefix``).
    """
    default_prefix = 'region'

    def __init__(self, topk: Sequence[int] = (1, 5), **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            sample = sample if isinstance(sample, dict) else sample.to_dict()
            pred = sample['pred_topk'].cpu()
            regions = []
            for label, thing, ranked in zip(sample['gt_labels'].tolist(), sample['is_thing'].tolist(), pred):
                hits = {k: int(label in ranked[:k].tolist()) for k in self.topk}
                regions.append((label, bool(thing), hits))
            self.results.append(regions)  # one entry per image: mmengine gathers results per dataset sample

    def compute_metrics(self, results) -> dict:
        per_class = defaultdict(lambda: defaultdict(list))
        kind = {}
        regions = [r for image in results for r in image]
        for label, thing, hits in regions:
            kind[label] = thing
            for k, hit in hits.items():
                per_class[label][k].append(hit)
        metrics = {}
        for group, members in (('thing', [c for c in kind if kind[c]]), ('stuff', [c for c in kind if not kind[c]]),
                               ('all', list(kind))):
            for k in self.topk:
                accs = [float(np.float16(sum(per_class[c][k]) / len(per_class[c][k]))) for c in members]
                metrics[f'{group}_top{k}'] = 100.0 * sum(accs) / len(accs) if accs else float('nan')
        metrics['num_regions'] = len(regions)
        return metrics
