"""Runner hooks."""
from .distill_hook import DeCLIPDistillHook, ensemble_state_dict

__all__ = ['DeCLIPDistillHook', 'ensemble_state_dict']
