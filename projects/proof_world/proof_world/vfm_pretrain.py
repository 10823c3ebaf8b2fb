"""The proof's label-free context teacher: a tiny DINOv2-architecture ViT (timm's ``vit_small_patch14_reg4_dinov2``
family, 4 registers, shrunk through ``model_kwargs``) trained self-supervised on the world's train images only.
It never sees a label or a caption; labels are read only afterwards, by the k-NN probe of its report.

Objective: dense contrastive learning between two augmented views of an image with a known correspondence
(the pixel-level InfoNCE of VADeR / PixPro's contrastive branch). Each view is a random square crop (0.35-1 of
the area), flipped at random, with mild brightness/contrast jitter, blur and pixel noise; points are drawn
in the overlap of the two crops, the backbone's final-norm patch tokens are sampled (bilinearly) at each point
in each view, projected by a small MLP head (dropped after training) and matched by a symmetric InfoNCE loss
over all points of the batch (the other points of the same image and of the other images are negatives).

Why this objective: DeCLIP distils the teacher's patch-token affinities (which tokens attend to which), so the
teacher's tokens must be alike within an object or region and unlike across regions. Matching a point across
crops of different position and scale removes position as a cue (the same point sits at different token
positions in the two views) and the photometric jitter removes exact pixel values, so the only way to tell a
point from the other points of the image is its local appearance and context: its texture, colour and shape
surroundings, which are shared by the pixels of one region or object and differ between regions. InfoNCE
cannot collapse and learns in the few hundred steps the 2-minute budget allows; a DINO-style self-distillation
needs thousands of steps and a centring schedule against collapse. ``objective='swav'`` (SwAV's swapped
prediction of Sinkhorn-balanced prototype assignments, per point) is the clustering alternative. Measured on
the default world (2000 train scenes; held-out within-image neighbour precision of thing patches,
``probes.within_image_neighbours``, chance 0.06): random init 0.46; 200 steps: SwAV 0.48, InfoNCE 0.50; 400
steps of InfoNCE: 0.52 at lr 1e-3, 0.55 at lr 2e-3 (the default recipe). The same training makes cross-image
k-NN patch classification slightly worse than random init (0.85 against 0.88): the objective separates the
points of an image, which is what a context teacher is for, not classes across images. The colour jitter is mild because colour is what separates regions here
(DINOv2's strong jitter makes its features colour-blind by design).

The weights are saved in the official DINOv2 file layout (``register_tokens``, ``mask_token``, a position table
with a zero CLS row), so ``VFMTeacher(arch='dinov2_vits14_reg', checkpoint=path, model_kwargs=...)`` loads them
through timm's own ``checkpoint_filter_fn``, exactly as it loads the torch-hub DINOv2 files.
"""
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import load_split
from .cache import cached_paths, publish, save_with_report
from .training import cosine_lr, optimise
from .world import read_world_params

VFM_ARCH = 'dinov2_vits14_reg'
VFM_TRAINING_VERSION = 1    # bump with any change here or in data.py that alters the trained weights
VFM_MODEL_KWARGS = dict(img_size=96, patch_size=8, embed_dim=64, depth=4, num_heads=2, init_values=0.1)


def timm_to_official_dinov2(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A timm ``vit_*_reg4_dinov2`` state dict -> the official DINOv2 (torch hub) layout, the inverse of timm's
    ``_convert_dinov2``: ``reg_token`` -> ``register_tokens``, a zero CLS row in front of ``pos_embed`` (timm's
    ``cls_token`` already holds the CLS position), and the (unused) ``mask_token``."""
    out = {k: v.clone() for k, v in state_dict.items() if k not in ('reg_token', 'pos_embed')}
    if 'reg_token' not in state_dict:
        raise KeyError('expected a timm DINOv2 model with registers (no reg_token in its state dict)')
    out['register_tokens'] = state_dict['reg_token'].clone()
    pos = state_dict['pos_embed']
    out['pos_embed'] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    out['mask_token'] = pos.new_zeros(1, pos.shape[-1])
    return out


def _square_boxes(rng: np.random.Generator, n: int, size: int, min_area: float) -> np.ndarray:
    sides = np.sqrt(rng.uniform(min_area, 1.0, n)) * size
    x0, y0 = rng.uniform(0, 1, n) * (size - sides), rng.uniform(0, 1, n) * (size - sides)
    return np.stack([x0, y0, x0 + sides, y0 + sides], 1)


def two_views(images: torch.Tensor, rng: np.random.Generator, out_size: int, points: int, min_area: float = 0.35,
              return_points: bool = False):
    """uint8 (B, 3, H, W) -> two views (B, 3, S, S) in 0..1 and the point coordinates (B, P, 2) of the same image
    points in each view, in grid_sample's [-1, 1] (x, y) convention; with ``return_points`` also the points in
    image pixels (B, P, 2) (x, y) (for labels at the points: sam_pretrain)."""
    from torchvision.ops import roi_align
    b, _, h, _ = images.shape
    boxes = [_square_boxes(rng, b, h, min_area) for _ in range(2)]
    # the overlap must hold the points: redraw the second crop where it is too small
    for _ in range(20):
        lo, hi = np.maximum(boxes[0][:, :2], boxes[1][:, :2]), np.minimum(boxes[0][:, 2:], boxes[1][:, 2:])
        bad = ((hi - lo) < 0.25 * h).any(1)
        if not bad.any():
            break
        boxes[1][bad] = _square_boxes(rng, int(bad.sum()), h, min_area)
    else:
        boxes[1][bad] = boxes[0][bad]
    lo, hi = np.maximum(boxes[0][:, :2], boxes[1][:, :2]), np.minimum(boxes[0][:, 2:], boxes[1][:, 2:])
    pts = lo[:, None] + rng.uniform(0, 1, (b, points, 2)) * (hi - lo)[:, None]          # (B, P, 2) image xy
    x = images.float() / 255
    views, grids = [], []
    for box in boxes:
        rois = torch.from_numpy(np.concatenate([np.arange(b)[:, None], box], 1)).float()
        view = roi_align(x, rois, output_size=(out_size, out_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        rel = (pts - box[:, None, :2]) / (box[:, None, 2:] - box[:, None, :2])              # 0..1 in the crop
        flip = rng.random(b) < 0.5
        rel[flip, :, 0] = 1 - rel[flip, :, 0]
        view[torch.from_numpy(flip)] = view[torch.from_numpy(flip)].flip(-1)
        gain = torch.from_numpy(rng.uniform(0.8, 1.2, (b, 1, 1, 1))).float()
        contrast = torch.from_numpy(rng.uniform(0.8, 1.2, (b, 1, 1, 1))).float()
        mean = view.mean(dim=(1, 2, 3), keepdim=True)
        view = (view - mean) * contrast + mean * gain
        blur = torch.from_numpy(rng.random(b) < 0.3)
        if blur.any():
            view[blur] = F.avg_pool2d(F.pad(view[blur], (1, 1, 1, 1), mode='replicate'), 3, stride=1)
        view = view + torch.from_numpy(rng.normal(0, 1, view.shape) * rng.uniform(0, 0.03, (b, 1, 1, 1))).float()
        views.append(view.clamp(0, 1))
        grids.append(torch.from_numpy(rel * 2 - 1).float())
    return (views, grids, pts) if return_points else (views, grids)


class DenseContrastiveHead(nn.Module):
    """Projection head of the dense objective: (N, C) tokens -> (N, D) L2-normalised embeddings."""

    def __init__(self, in_dim: int, hidden: int = 256, out_dim: int = 128, prototypes: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.prototypes = nn.Parameter(torch.randn(prototypes, out_dim) / out_dim ** 0.5)   # 'swav' only

    def forward(self, x):
        return F.normalize(self.mlp(x), dim=-1)


def sample_tokens(model, view: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised views (B, 3, S, S), points (B, P, 2) -> final-norm patch tokens at the points (B*P, C)."""
    tokens = model.forward_features(view)[:, model.num_prefix_tokens:]
    b, n, c = tokens.shape
    side = int(math.isqrt(n))
    token_map = tokens.transpose(1, 2).reshape(b, c, side, side)
    sampled = F.grid_sample(token_map, grid[:, :, None], mode='bilinear', align_corners=False)   # (B, C, P, 1)
    return sampled[..., 0].transpose(1, 2).reshape(-1, c)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """(N, K) prototype scores -> (N, K) soft assignments that spread the N points evenly over the K prototypes
    (SwAV's Sinkhorn-Knopp step: what keeps the clustering from collapsing to one prototype)."""
    q = torch.exp((scores - scores.max()) / eps).t()
    q /= q.sum()
    k, n = q.shape
    for _ in range(iters):
        q /= q.sum(1, keepdim=True) * k
        q /= q.sum(0, keepdim=True) * n
    return (q * n).t()


def dense_swapped_prediction(z1: torch.Tensor, z2: torch.Tensor, prototypes: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    """SwAV's swapped prediction between matched rows of (N, D) normalised embeddings: each view predicts the
    other's balanced prototype assignment."""
    protos = F.normalize(prototypes, dim=-1)
    s1, s2 = z1 @ protos.t(), z2 @ protos.t()
    q1, q2 = sinkhorn(s1), sinkhorn(s2)
    return -0.5 * ((q2 * F.log_softmax(s1 / temperature, 1)).sum(1).mean()
                   + (q1 * F.log_softmax(s2 / temperature, 1)).sum(1).mean())


def dense_infonce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of (N, D) normalised embeddings."""
    logits = z1 @ z2.t() / temperature
    target = torch.arange(len(z1))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def teacher_adamw(model: nn.Module, head: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW for a teacher ViT and its projection head: no weight decay on the head, biases, norms, tokens and
    position table; ``weight_decay`` on the ViT's other weights."""
    def no_decay(name, p):
        return p.ndim < 2 or 'token' in name or 'pos_embed' in name
    return torch.optim.AdamW(
        [dict(params=[p for n, p in model.named_parameters() if no_decay(n, p)] + list(head.parameters()),
              weight_decay=0.0),
         dict(params=[p for n, p in model.named_parameters() if not no_decay(n, p)], weight_decay=weight_decay)],
        lr=lr)


def vfm_teacher_cfg(checkpoint, arch: str = VFM_ARCH, model_kwargs: Optional[Dict] = None) -> Dict:
    """The distiller's ``vfm_teacher`` config for a pretrained proof VFM."""
    return dict(type='VFMTeacher', arch=arch, checkpoint=str(checkpoint), dtype='fp32',
                model_kwargs=dict(model_kwargs or VFM_MODEL_KWARGS))


def pretrain_vfm(world_root, out_path=None, steps: int = 400, batch_size: int = 32, points: int = 32,
                 lr: float = 2e-3, weight_decay: float = 0.05, warmup: int = 40, temperature: float = 0.2,
                 objective: str = 'infonce', seed: int = 0, arch: str = VFM_ARCH, model_kwargs: Optional[Dict] = None,
                 cache_dir: Optional[str] = None, progress: bool = True,
                 probe_scenes: Optional[Tuple[int, int]] = (200, 100)) -> Tuple[Path, Dict]:
    """Self-supervised pretraining of the context teacher on the world's train images; cached.

    Returns (path of the official-layout state dict, ``vfm_teacher`` config for the distiller). The report
    (``read_report(path)``) holds the recipe, the loss per step, the time, and the k-NN patch probe
    (``probes.patch_knn_accuracy``, ``probe_scenes`` = (train, val) scenes) of the trained teacher and of the
    same architecture with random weights, both loaded through ``VFMTeacher``.
    """
    import timm

    from declip_mm.models.teachers.vfm import IMAGENET_MEAN, IMAGENET_STD, VFM_ARCHS, VFMTeacher
    if arch not in VFM_ARCHS or not arch.endswith('_reg'):
        raise ValueError(f"pretrain_vfm trains a DINOv2-with-registers arch (e.g. '{VFM_ARCH}'), got '{arch}'")
    if objective not in ('infonce', 'swav'):
        raise ValueError(f"objective must be 'infonce' or 'swav', got '{objective}'")
    model_kwargs = dict(model_kwargs or VFM_MODEL_KWARGS)
    recipe = dict(arch=arch, model_kwargs=model_kwargs, steps=steps, batch_size=batch_size, points=points, lr=lr,
                  weight_decay=weight_decay, warmup=warmup, temperature=temperature, objective=objective, seed=seed)
    path, out_path, hit = cached_paths('vfm', world_root, recipe, VFM_TRAINING_VERSION, cache_dir, out_path, 'vfm.pt')
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
    images = load_split(world_root, 'train').images
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / 255
    model.train()

    def loss_of_step(step: int) -> torch.Tensor:
        batch = images[rng.choice(len(images), batch_size, replace=len(images) < batch_size)]
        views, grids = two_views(batch, rng, size, points)
        z1, z2 = (head(sample_tokens(model, (v - mean) / std, g)) for v, g in zip(views, grids))
        return dense_infonce(z1, z2, temperature) if objective == 'infonce' else \
            dense_swapped_prediction(z1, z2, head.prototypes, temperature)
    losses, train_seconds = optimise(steps, loss_of_step, list(model.parameters()) + list(head.parameters()),
                                     optimizer, scheduler, 'pretrain VFM', progress)
    state_dict = timm_to_official_dinov2({k: v.detach() for k, v in model.state_dict().items()})
    report = dict(recipe=recipe, world=read_world_params(world_root), losses=losses, train_seconds=train_seconds,
                  threads=torch.get_num_threads())
    save_with_report(path, state_dict, report)
    if probe_scenes:
        from .probes import patch_knn_accuracy
        grid = size // model.patch_embed.patch_size[0]
        report['knn_probe'] = {}
        for name, checkpoint in (('trained', path), ('random_init', None)):
            torch.manual_seed(seed)
            teacher = VFMTeacher(arch=arch, checkpoint=None if checkpoint is None else str(checkpoint),
                                 model_kwargs=model_kwargs)
            report['knn_probe'][name] = patch_knn_accuracy(
                lambda x: teacher((F.interpolate(x.float() / 255, size=(size, size), mode='bilinear', antialias=True,
                                                 align_corners=False) - mean) / std),
                world_root, grid, train_scenes=probe_scenes[0], val_scenes=probe_scenes[1])
        save_with_report(path, state_dict, report)
    final = publish(path, out_path)
    return final, vfm_teacher_cfg(final, arch, model_kwargs)
