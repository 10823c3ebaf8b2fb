"""Pretraining the proof's two towers on a written world, on a CPU in minutes, cached by content hash.

* :func:`pretrain_clip`: a tiny CLIP (open_clip model config ``DeCLIP-Proof-ViT-8``: 96 px, 8 px patches, a 12 x 12
  grid, a 4-block width-64 image tower, a 2-block text tower, a 64-d joint space) trained with open_clip's
  ``create_model`` and ``ClipLoss`` on the train split's image-caption pairs. With probability ``crop_prob`` a
  sample is a random square crop of its scene (``crop_min_area`` to all of it, so that single things fill some
  crops, as the grid cells of the distillation's crop teacher do), captioned (with the world's own caption builder)
  by what the crop shows: the things of which it holds at least 60 % (crops that cut a thing between 15 % and 60 %
  are redrawn) and the stuff covering at least 4 % of it. Web-scale CLIPs see objects at every scale; this gives the
  tiny one the same, and the crop teacher of the distillation relies on it. With probability ``stuff_drop`` a
  caption names the things only (the world's own captions always name the ground too): otherwise the four stuff
  textures, easy to see, let the loss fall without learning the things.
* the label-free context teacher is ``vfm_pretrain.pretrain_vfm``.

Both write ``<cache>/<key>/{clip,vfm}.pt`` and a json report next to it (``cache.read_report``) and return at
once when the file is there; ``cache.py`` says what the key hashes and where the cache is.
"""
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from declip_mm.constants import CLIP_MEAN, CLIP_STD  # 0-1 scale: what our CLIP configs use

from .cache import cached_paths, publish, read_report, save_with_report
from .data import WorldSplit, load_split
from .training import cosine_lr, progress_bar
from .world import CLASS_NAMES, NUM_STUFF, make_caption, read_world_params

CLIP_MODEL = 'DeCLIP-Proof-ViT-8'
CLIP_TRAINING_VERSION = 1   # bump with any change here or in data.py that alters the trained weights
CROP_SHOWN, CROP_CUT, CROP_STUFF = 0.6, 0.15, 0.04


# ---------------------------------------------------------------- CLIP
def crop_view(rng: np.random.Generator, label: np.ndarray, min_area: float = 0.3, tries: int = 10):
    """A random square crop of a scene and what it shows: ((x0, y0, x1, y1), thing ids, stuff ids), or None
    when no try gave a crop that shows at least one thing and cuts none ambiguously (see the module doc)."""
    h, w = label.shape
    total = np.bincount(label.ravel(), minlength=len(CLASS_NAMES))
    things = np.array([c for c in range(NUM_STUFF, len(CLASS_NAMES)) if total[c]])
    for _ in range(tries):
        side = int(round(math.sqrt(rng.uniform(min_area, 1.0)) * min(h, w)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        inside = np.bincount(label[y0:y0 + side, x0:x0 + side].ravel(), minlength=len(CLASS_NAMES))
        shown = inside[things] / total[things]
        if ((shown > CROP_CUT) & (shown < CROP_SHOWN)).any() or not (shown >= CROP_SHOWN).any():
            continue
        stuff = [s for s in range(NUM_STUFF) if inside[s] >= CROP_STUFF * side * side]
        if not stuff:
            continue
        return (x0, y0, x0 + side, y0 + side), things[shown >= CROP_SHOWN].tolist(), stuff
    return None


def clip_batch(split: WorldSplit, index: Sequence[int], rng: np.random.Generator, size: int, crop_prob: float,
               stuff_drop: float = 0.0, crop_min_area: float = 0.3):
    """(B, 3, size, size) CLIP-normalised images and their (B,) captions: scenes or captioned crops, resized by
    torchvision's RoIAlign (adaptive sampling: an area average), h-flipped with probability 0.5; with probability
    ``stuff_drop`` a caption names the things only."""
    from torchvision.ops import roi_align
    h, w = split.images.shape[-2:]
    boxes, captions = [], []
    for i in index:
        box, things, stuff = (0, 0, w, h), split.box_labels[i], None
        if rng.random() < crop_prob:
            view = crop_view(rng, split.labels[i].numpy(), crop_min_area)
            if view is not None:
                box, things, stuff = view
        drop = rng.random() < stuff_drop
        if drop:
            caption = make_caption(rng, things, [])
        elif stuff is not None:
            caption = make_caption(rng, things, stuff)
        else:
            caption = split.captions[i]
        boxes.append(box)
        captions.append(caption)
    images = split.images[torch.as_tensor(np.asarray(index))].float()
    rois = torch.cat([torch.arange(len(index))[:, None].float(), torch.tensor(boxes, dtype=torch.float32)], 1)
    images = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    flip = torch.from_numpy(rng.random(len(index)) < 0.5)
    images[flip] = images[flip].flip(-1)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return (images / 255 - mean) / std, captions


def _clip_param_groups(model, weight_decay: float):
    """open_clip_train's rule: no weight decay on gains, biases, norms and the logit scale."""
    def exclude(n, p):
        return p.ndim < 2 or 'bn' in n or 'ln' in n or 'bias' in n or 'logit_scale' in n
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [dict(params=[p for n, p in named if exclude(n, p)], weight_decay=0.0),
            dict(params=[p for n, p in named if not exclude(n, p)], weight_decay=weight_decay)]


def pretrain_clip(world_root, out_path=None, model_name: str = CLIP_MODEL, steps: int = 400, batch_size: int = 64,
                  lr: float = 1e-3, weight_decay: float = 0.1, warmup: int = 40, crop_prob: float = 0.8,
                  crop_min_area: float = 0.1, stuff_drop: float = 0.5, seed: int = 0, cache_dir: Optional[str] = None,
                  progress: bool = True, zero_shot_scenes: Optional[int] = 300,
                  zero_shot_templates: str = 'imagenet80') -> Path:
    """Contrastive pretraining of open_clip model ``model_name`` on the world's train split; cached.

    Returns the path of an open_clip state dict (``<cache>/<key>/clip.pt``, copied to ``out_path`` when given)
    that ``DeCLIPViT(model_name=..., pretrained=path)`` and ``OpenCLIPTextEncoder(model_name=..., pretrained=path)``
    load. Its report (``read_report(path)``) holds the recipe, the loss per step, the training time and the
    zero-shot presence retrieval (``probes.presence_retrieval``, ``zero_shot_templates``) on ``zero_shot_scenes``
    held-out and train scenes (None: no probe) and the k-NN / within-image probe of its dense map
    (``probes.clip_dense_probe``: 'vanilla' and training-free 'csa'). ``DeCLIP-Proof-Test-ViT-8`` is a 32 px
    model config for tests.
    """
    import open_clip
    from open_clip.loss import ClipLoss

    from declip_mm.models import presets  # noqa: F401  (registers our open_clip model configs)
    from .probes import clip_dense_probe, presence_retrieval
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown open_clip model '{model_name}'")
    recipe = dict(model_name=model_name, model_config=config, steps=steps, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, warmup=warmup, crop_prob=crop_prob, crop_min_area=crop_min_area,
                  stuff_drop=stuff_drop, seed=seed)
    path, out_path, hit = cached_paths('clip', world_root, recipe, CLIP_TRAINING_VERSION, cache_dir, out_path,
                                       'clip.pt')
    if hit:
        return publish(path, out_path)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.create_model(model_name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(model_name)
    size = config['vision_cfg']['image_size']
    split = load_split(world_root, 'train')
    optimizer = torch.optim.AdamW(_clip_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6,
                                  foreach=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup))
    loss_fn = ClipLoss()
    losses = []
    start = time.perf_counter()
    model.train()
    bar = progress_bar(steps, 'pretrain CLIP', progress)
    for step in range(steps):
        index = rng.choice(len(split.captions), batch_size, replace=len(split.captions) < batch_size)
        images, captions = clip_batch(split, index, rng, size, crop_prob, stuff_drop, crop_min_area)
        image_features, text_features, logit_scale = model(images, tokenizer(captions))[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f'{losses[-1]:.3f}')
    bar.close()
    train_seconds = time.perf_counter() - start
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    report = dict(recipe=recipe, world=read_world_params(world_root), losses=losses, train_seconds=train_seconds,
                  threads=torch.get_num_threads())
    save_with_report(path, state_dict, report)
    if zero_shot_scenes:
        report['zero_shot'] = {split_name: presence_retrieval(model_name, path, world_root, split_name,
                                                              zero_shot_templates, limit=zero_shot_scenes)
                               for split_name in ('val', 'train')}
        report['dense_probe'] = clip_dense_probe(model_name, path, world_root, train_scenes=zero_shot_scenes,
                                                 val_scenes=max(1, zero_shot_scenes // 2))
        save_with_report(path, state_dict, report)
    return publish(path, out_path)


__all__ = ['pretrain_clip', 'read_report', 'CLIP_MODEL']
