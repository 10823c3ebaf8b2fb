"""What both pretraining recipes (``pretrain.py``: the world CLIP, ``vfm_pretrain.py``: the label-free VFM) share:
the progress bar and the warm-up + cosine learning-rate factor."""
import math


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` steps (hidden unless ``enabled``)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def cosine_lr(step: int, steps: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up over ``warmup`` steps, then a cosine to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
