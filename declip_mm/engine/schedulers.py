"""Learning-rate schedules of the reference training code that mmengine lacks.

``WarmupCosineLR`` is open_clip's ``cosine_lr`` (``src/training/scheduler.py``), which DeCLIP's training code
(derived from CLIPSelf / open_clip) uses: for step s (0-based iteration), warm-up W and T total steps,

    lr(s) = base * (s + 1) / W                                   s <  W
    lr(s) = base * 0.5 * (1 + cos(pi * (s - W) / (T - W)))       s >= W

so the cosine starts AFTER the warm-up and reaches 0 at the end. mmengine's ``LinearLR`` +
``CosineAnnealingLR`` differ from it: the linear ramp starts at ``start_factor`` rather than 1/W, and a cosine
with ``begin=0`` runs through the warm-up.
"""
import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from ..registry import PARAM_SCHEDULERS


class WarmupCosineParamScheduler(_ParamScheduler):
    """Linear warm-up over ``warmup_iters`` steps from base/W, then cosine to 0 at ``end`` (see module doc).

    Args:
        warmup_iters: W, in iterations (also when the scheduler is given in epochs and converted). A run shorter
            than W stays in the warm-up, as the reference does.
        begin / end: the steps the schedule spans; ``end`` is T (required). With ``by_epoch=True`` and
            ``convert_to_iter_based=True`` they are epochs, converted to iterations by mmengine.
    """

    def __init__(self, optimizer, param_name: str, warmup_iters: int, begin: int = 0, end: int = INF,
                 last_step: int = -1, by_epoch: bool = False, verbose: bool = False):
        if end == INF:
            raise ValueError('WarmupCosineLR needs an end (the total number of steps the cosine reaches 0 at)')
        if warmup_iters < 0:
            raise ValueError(f'warmup_iters must be >= 0, got {warmup_iters}')
        self.warmup_iters = warmup_iters
        super().__init__(optimizer, param_name=param_name, begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=INF, by_epoch=True, epoch_length=None, **kwargs):
        """mmengine's ``convert_to_iter_based``: begin/end in epochs -> iterations; warmup_iters stays."""
        if not by_epoch or not epoch_length:
            raise ValueError('convert_to_iter_based needs by_epoch=True and a known epoch length')
        end = end if end == INF else int(end * epoch_length)
        return cls(*args, begin=int(begin * epoch_length), end=end, by_epoch=False, **kwargs)

    def factor(self, step: int) -> float:
        """lr(step) / base for the 0-based step since ``begin``."""
        warmup, total = self.warmup_iters, self.end - self.begin
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    def _get_value(self):
        return [base * self.factor(self.last_step) for base in self.base_values]


@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(LRSchedulerMixin, WarmupCosineParamScheduler):
    """open_clip's ``cosine_lr`` for the learning rate (see module doc)."""
