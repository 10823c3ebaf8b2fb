"""A tqdm progress bar over training iterations (for the demo and short runs)."""
from mmengine.hooks import Hook

from ...registry import HOOKS


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """Shows one tqdm bar over all training iterations, with the latest loss."""

    priority = 'VERY_LOW'

    def __init__(self, desc: str = 'training'):
        self.desc = desc
        self.bar = None

    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc=self.desc, unit='it')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if outputs and 'loss' in outputs:
                loss = outputs['loss']
                self.bar.set_postfix(loss=f'{float(getattr(loss, "detach", lambda: loss)()):.4f}')

    def after_train(self, runner) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
