"""What the pretraining recipes (``pretrain.py``: the world CLIP; ``vfm_pretrain.py``, ``sam_pretrain.py``: context
teachers) share: the progress bar, the warm-up + cosine learning-rate factor and the optimisation loop."""
import math
import time
from typing import Callable, List, Sequence, Tuple


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` steps (hidden unless ``enabled``)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def cosine_lr(step: int, steps: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up over ``warmup`` steps, then a cosine to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def optimise(steps: int, loss_of_step: Callable[[int], object], clipped: Sequence, optimizer, scheduler,
             desc: str, progress: bool, max_norm: float = 1.0) -> Tuple[List[float], float]:
    """``steps`` AdamW-style steps: loss_of_step(step) -> backward -> gradient norm clipped to ``max_norm`` over
    ``clipped`` parameters -> optimizer and scheduler step. Returns (the loss per step, the seconds taken)."""
    import torch
    losses = []
    start = time.perf_counter()
    bar = progress_bar(steps, desc, progress)
    for step in range(steps):
        loss = loss_of_step(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(clipped), max_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f'{losses[-1]:.3f}')
    bar.close()
    return losses, time.perf_counter() - start
