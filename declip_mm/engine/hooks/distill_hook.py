"""DeCLIPDistillHook: owns the distillation stage around mmengine's Runner.

* teachers: placed on the runner's device in their configured dtype and kept in eval mode;
* data: tells the dataset the epoch (its grid draws depend on it) and reports skipped unreadable images;
* weight-space ensemble: alpha * student + (1 - alpha) * original weights (docs/method.md section 5), used for
  validation/testing (the raw student is restored afterwards, and is what training checkpoints hold) and
  for the exported backbone;
* export: ``<work_dir>/declip_backbone_epoch_<E>.pth`` every ``export_interval`` epochs and
  ``declip_backbone_final.pth`` after training — DeCLIPViT checkpoints with metadata (model, mode, scale,
  input size) that ``DeCLIPViT(model_name, pretrained=path)`` loads directly.
"""
import copy
import os.path as osp
from typing import Dict

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ...registry import HOOKS


def ensemble_state_dict(student: Dict[str, torch.Tensor], original: Dict[str, torch.Tensor],
                        alpha: float) -> Dict[str, torch.Tensor]:
    """alpha * student + (1 - alpha) * original for floating tensors; others are taken from the student."""
    if student.keys() != original.keys():
        raise KeyError(f'student and original weights differ in keys: {sorted(student.keys() ^ original.keys())[:10]}')
    return {k: alpha * v + (1 - alpha) * original[k].to(v) if v.is_floating_point() else v for k, v in student.items()}


@HOOKS.register_module()
class DeCLIPDistillHook(Hook):
    """See the module docstring. ``alpha``: 0.7 for B models, 0.95 for L models (paper)."""

    priority = 'ABOVE_NORMAL'

    def __init__(self, alpha: float = 0.7, export_interval: int = 1, export_final: bool = True):
        if not 0 <= alpha <= 1:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        self.alpha = alpha
        self.export_interval = export_interval
        self.export_final = export_final
        self._backup = None
        self._skipped = 0

    @staticmethod
    def _distiller(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'place_teachers'):
            raise TypeError(f'DeCLIPDistillHook needs a DeCLIPDistiller model, got {type(model).__name__}')
        return model

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        if getattr(loader, 'persistent_workers', False):
            raise ValueError('DeCLIPDistillHook sets the dataset epoch before each epoch; use '
                             'train_dataloader.persistent_workers=False so workers see it')
        self._distiller(runner).place_teachers()

    def before_train_epoch(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, 'set_epoch'):
            dataset.set_epoch(runner.epoch)
        self._skipped = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs and 'data_skipped' in outputs:
            self._skipped += int(round(float(outputs['data_skipped'])))

    def after_train_epoch(self, runner) -> None:
        if self._skipped:
            runner.logger.warning(f'epoch {runner.epoch + 1}: skipped {self._skipped} unreadable images')
        if self.export_interval and (runner.epoch + 1) % self.export_interval == 0:
            self.export(runner, f'declip_backbone_epoch_{runner.epoch + 1}.pth')

    def after_train(self, runner) -> None:
        if self.export_final:
            self.export(runner, 'declip_backbone_final.pth')

    def ensembled_backbone(self, runner):
        """A copy of the student holding the weight-space ensemble."""
        model = self._distiller(runner)
        backbone = copy.deepcopy(model.student)
        backbone.load_state_dict(ensemble_state_dict(model.student.state_dict(),
                                                     model.clip_teacher.state_dict(), self.alpha))
        return backbone

    def export(self, runner, filename: str) -> None:
        if not is_main_process():
            return
        path = osp.join(runner.work_dir, filename)
        self.ensembled_backbone(runner).save_checkpoint(path, ensemble_alpha=self.alpha, epoch=runner.epoch,
                                                        iter=runner.iter)
        runner.logger.info(f'exported the DeCLIP backbone (ensemble alpha {self.alpha}) to {path}')

    # evaluation runs on the ensembled weights
    def _swap_in(self, runner) -> None:
        student = self._distiller(runner).student
        self._backup = {k: v.clone() for k, v in student.state_dict().items()}
        student.load_state_dict(ensemble_state_dict(self._backup, self._distiller(runner).clip_teacher.state_dict(),
                                                    self.alpha))

    def _swap_out(self, runner) -> None:
        if self._backup is not None:
            self._distiller(runner).student.load_state_dict(self._backup)
            self._backup = None

    def before_val_epoch(self, runner) -> None:
        self._swap_in(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner)

    def before_test_epoch(self, runner) -> None:
        self._swap_in(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._swap_out(runner)
