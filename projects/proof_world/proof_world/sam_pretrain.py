"""The proof's SAM-like context teacher: the tiny DINOv2-architecture ViT of ``vfm_pretrain.py`` trained from
scratch on class-agnostic masks of the world's train scenes.

What it stands for: SAM is trained on masks without class names (SA-1B), so its image encoder learns what belongs
together, never what a thing is called. Here the masks are the connected components (4-connectivity,
``scipy.ndimage.label``'s default cross) of each label of a train label map, ignore pixels dropped; the class ids
are then thrown away: two pieces of one stuff class are two segments, and a segment id says only "same segment /
different segment" within its image. What it is not: there is no prompt encoder and no mask decoder; only the
image encoder's dense features are trained, because DeCLIP distils only the encoder's patch-token affinities.

Objective: supervised-contrastive (multi-positive InfoNCE, SupCon's "L_out") over points. Two augmented views per
image come from ``vfm_pretrain.two_views`` (crops, flips, photometric jitter); each point's segment id is read from
the segment map at the same image point. The final-norm patch tokens at the points (``sample_tokens``) go through a
small projection head (dropped after training); for each point, the points of the same segment in both views
are positives, the points of other segments of its image and all points of the other images are negatives.

Default recipe: 400 steps, batch 32, 32 points per image, AdamW lr 2e-3 (40 warm-up steps, cosine), weight decay
0.05, temperature 0.2, seed 0; 1054-1070 s on 1 thread of a shared 2-core AMD EPYC (the vfm_pretrain recipe's
size, about 2-3 minutes on idle cores). Settings compared on val scenes 100-199 (within-image thing precision,
``probes.within_image_neighbours``, chance 0.06; random init 0.417): temperature 0.1: 0.498, temperature 0.2:
0.516 (the default). On val scenes 0-99 (the ablation's test scenes) the default gives within-image thing
precision 0.529 (random init 0.455; the InfoNCE teacher of vfm_pretrain.py 0.546), within-image precision 0.879
(0.851), affinity AUC 0.969 / thing-pair AUC 0.896 (0.951 / 0.869), and k-NN thing patch accuracy 0.269 (0.393:
as with the InfoNCE teacher, cross-image classes are not what it learns; here it never sees a class at all).
"""
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .cache import cached_paths, publish, save_with_report
from .data import load_split
from .training import cosine_lr, optimise
from .vfm_pretrain import (VFM_ARCH, VFM_MODEL_KWARGS, DenseContrastiveHead, sample_tokens, teacher_adamw,
                           timm_to_official_dinov2, two_views, vfm_teacher_cfg)
from .world import IGNORE, read_world_params

SAM_TRAINING_VERSION = 1    # bump with any change here (or in the helpers it imports) that alters the weights
CONNECTIVITY = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])    # 4-connectivity


def label_segments(label: np.ndarray, ignore: int = IGNORE) -> np.ndarray:
    """(H, W) integer label map -> (H, W) int32 class-agnostic segment ids: 1..n, one per 4-connected component
    of each label value, 0 where the label is ``ignore``. Which class a segment had is not kept."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f'label_segments expects one (H, W) label map, got shape {label.shape}')
    from scipy import ndimage
    out = np.zeros(label.shape, np.int32)
    count = 0
    for value in np.unique(label):
        if value == ignore:
            continue
        components, n = ndimage.label(label == value, structure=CONNECTIVITY)
        out[components > 0] = components[components > 0] + count
        count += n
    return out


def segment_maps(labels: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """uint8 (N, H, W) label maps -> int32 (N, H, W) segment ids (:func:`label_segments` per map)."""
    return torch.from_numpy(np.stack([label_segments(m, ignore) for m in labels.numpy()]))


def views_with_segments(images: torch.Tensor, segments: torch.Tensor, rng: np.random.Generator, out_size: int,
                        points: int, min_area: float = 0.35):
    """``two_views`` plus the segment id (B, P) at each of its points (nearest pixel of ``segments`` (B, H, W))."""
    b, _, h, w = images.shape
    views, grids, pts = two_views(images, rng, out_size, points, min_area, return_points=True)
    xs = np.clip(np.floor(pts[..., 0]), 0, w - 1).astype(np.int64)
    ys = np.clip(np.floor(pts[..., 1]), 0, h - 1).astype(np.int64)
    ids = segments[torch.arange(b)[:, None], torch.from_numpy(ys), torch.from_numpy(xs)]
    return views, grids, ids


def supervised_contrastive(z: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon's multi-positive InfoNCE: (N, D) normalised embeddings, (N,) group ids (-1: left out).

    For each kept anchor i: -mean over positives p (same group, p != i) of log softmax_i(z_i . z_a / T)[p], the
    softmax over all other kept points a != i; averaged over the anchors with at least one positive.
    """
    if z.ndim != 2 or groups.shape != z.shape[:1]:
        raise ValueError(f'expected z (N, D) and groups (N,), got {tuple(z.shape)} and {tuple(groups.shape)}')
    keep = groups >= 0
    z, groups = z[keep], groups[keep]
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(eye, float('-inf'))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (groups[:, None] == groups[None, :]) & ~eye
    count = positive.sum(1)
    anchors = count > 0
    if not anchors.any():
        raise ValueError('supervised_contrastive: no point has a positive (every group has one point)')
    per_anchor = -(log_prob.masked_fill(~positive, 0).sum(1)[anchors] / count[anchors])
    return per_anchor.mean()


def _teacher_features(teacher, size: int, mean: torch.Tensor, std: torch.Tensor) -> Callable:
    """uint8 (B, 3, H, W) -> the teacher's patch tokens, resized and normalised as ``vfm_pretrain`` probes them."""
    return lambda x: teacher((F.interpolate(x.float() / 255, size=(size, size), mode='bilinear', antialias=True,
                                            align_corners=False) - mean) / std)


def _check_selection(world_root, scenes: Tuple[int, int]) -> None:
    start, stop = scenes
    if not 0 <= start < stop:
        raise ValueError(f'selection_scenes must be (start, stop) with 0 <= start < stop, got {scenes}')
    n_val = read_world_params(world_root)['n_val']
    if stop > n_val:
        raise ValueError(f'selection_scenes {tuple(scenes)}: the world has only {n_val} val scenes')


def pretrain_sam(world_root, out_path=None, steps: int = 400, batch_size: int = 32, points: int = 32,
                 lr: float = 2e-3, weight_decay: float = 0.05, warmup: int = 40, temperature: float = 0.2,
                 seed: int = 0, arch: str = VFM_ARCH, model_kwargs: Optional[Dict] = None,
                 cache_dir: Optional[str] = None, progress: bool = True,
                 probe_scenes: Optional[Tuple[int, int]] = (200, 100),
                 selection_scenes: Optional[Tuple[int, int]] = (100, 200)) -> Tuple[Path, Dict]:
    """Class-agnostic mask pretraining of the SAM-like context teacher on the world's train scenes; cached.

    Returns (path of the official-DINOv2-layout state dict, ``vfm_teacher`` config for the distiller). The report
    (``read_report(path)``) holds the recipe, the loss per step, the time and threads, ``knn_probe``
    (``probes.patch_knn_accuracy``, ``probe_scenes`` = (train, val) scenes: val 0 .. val - 1, the ablation's test
    scenes) and ``selection_probe`` (the same probe on val scenes ``selection_scenes`` = (start, stop), where
    recipes are compared), each for 'trained' and 'random_init'.
    """
    import timm

    from declip_mm.models.teachers.vfm import IMAGENET_MEAN, IMAGENET_STD, VFM_ARCHS, VFMTeacher
    if arch not in VFM_ARCHS or not arch.endswith('_reg'):
        raise ValueError(f"pretrain_sam trains a DINOv2-with-registers arch (e.g. '{VFM_ARCH}'), got '{arch}'")
    if steps < 1 or batch_size < 1 or points < 1 or temperature <= 0:
        raise ValueError(f'steps, batch_size, points and temperature must be positive, got {steps}, {batch_size}, '
                         f'{points}, {temperature}')
    if selection_scenes:
        _check_selection(world_root, selection_scenes)
    model_kwargs = dict(model_kwargs or VFM_MODEL_KWARGS)
    recipe = dict(arch=arch, model_kwargs=model_kwargs, steps=steps, batch_size=batch_size, points=points, lr=lr,
                  weight_decay=weight_decay, warmup=warmup, temperature=temperature, seed=seed,
                  masks='connected components (4-connectivity) of each label, class-agnostic',
                  objective='supcon')
    path, out_path, hit = cached_paths('sam', world_root, recipe, SAM_TRAINING_VERSION, cache_dir, out_path, 'sam.pt')
    if hit:
        final = publish(path, out_path)
        return final, vfm_teacher_cfg(final, arch, model_kwargs)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = timm.create_model(VFM_ARCHS[arch], pretrained=False, num_classes=0, **model_kwargs)
    size = model.patch_embed.img_size[0]
    head = DenseContrastiveHead(model.embed_dim)
    optimizer = teacher_adamw(model, head, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup))
    train = load_split(world_root, 'train')
    images, segments = train.images, segment_maps(train.labels)
    scale = int(segments.max()) + 1         # global group id = scene index * scale + segment id
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / 255
    model.train()

    def loss_of_step(step: int) -> torch.Tensor:
        index = torch.from_numpy(rng.choice(len(images), batch_size, replace=len(images) < batch_size))
        views, grids, ids = views_with_segments(images[index], segments[index], rng, size, points)
        groups = torch.where(ids > 0, index[:, None].long() * scale + ids.long(), torch.full_like(ids.long(), -1))
        z = torch.cat([head(sample_tokens(model, (v - mean) / std, g)) for v, g in zip(views, grids)])
        return supervised_contrastive(z, torch.cat([groups.flatten()] * 2), temperature)
    losses, train_seconds = optimise(steps, loss_of_step, list(model.parameters()) + list(head.parameters()),
                                     optimizer, scheduler, 'pretrain SAM-like', progress)
    state_dict = timm_to_official_dinov2({k: v.detach() for k, v in model.state_dict().items()})
    report = dict(recipe=recipe, world=read_world_params(world_root), losses=losses, train_seconds=train_seconds,
                  threads=torch.get_num_threads())
    save_with_report(path, state_dict, report)
    if probe_scenes or selection_scenes:
        from .probes import patch_knn_accuracy
        grid = size // model.patch_embed.patch_size[0]
        for name, checkpoint in (('trained', path), ('random_init', None)):
            torch.manual_seed(seed)
            teacher = VFMTeacher(arch=arch, checkpoint=None if checkpoint is None else str(checkpoint),
                                 model_kwargs=model_kwargs)
            features_of = _teacher_features(teacher, size, mean, std)
            if probe_scenes:
                report.setdefault('knn_probe', {})[name] = patch_knn_accuracy(
                    features_of, world_root, grid, train_scenes=probe_scenes[0], val_scenes=probe_scenes[1])
            if selection_scenes:
                report.setdefault('selection_probe', {})[name] = patch_knn_accuracy(
                    features_of, world_root, grid, train_scenes=probe_scenes[0] if probe_scenes else 200,
                    val_scenes=selection_scenes[1] - selection_scenes[0], val_offset=selection_scenes[0])
        save_with_report(path, state_dict, report)
    final = publish(path, out_path)
    return final, vfm_teacher_cfg(final, arch, model_kwargs)
