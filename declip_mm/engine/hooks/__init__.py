"""Runner hooks."""
from .distill_hook import DeCLIPDistillHook, ensemble_state_dict
from .progress_hook import ProgressBarHook

__all__ = ['DeCLIPDistillHook', 'ProgressBarHook', 'ensemble_state_dict']
