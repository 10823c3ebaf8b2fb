"""Random towers never pass for results: a warning, never silence, when a user-facing model runs with randomly
initialised towers, and the note that every output of such a run carries."""
import logging

from ..constants import TINY_MODELS

RANDOM_NOTE = 'RANDOM WEIGHTS: results are meaningless'


def print_log(msg, logger='current', level=logging.INFO) -> None:
    """mmengine's ``print_log``, imported when a warning is due (the command line reads this module before it
    imports anything heavy)."""
    from mmengine.logging import print_log as log
    log(msg, logger=logger, level=level)


def warn_if_random(model_name: str, **weights) -> None:
    """Log a warning naming each of ``weights`` (argument name -> value) that is None for a real (non-tiny)
    open_clip model: its tower is random and the results are meaningless."""
    if model_name in TINY_MODELS:
        return
    missing = [name for name, value in weights.items() if value is None]
    if missing:
        print_log(f"{model_name}: {', '.join(missing)} not given, so those towers are RANDOMLY initialised and the "
                  'results are meaningless (pass the weights; see docs/inference.md)', logger='current',
                  level=logging.WARNING)
