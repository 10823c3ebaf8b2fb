"""The proof's DINO-style label-free context teacher: the same tiny DINOv2-with-registers ViT as vfm_pretrain.py
(``VFM_ARCH``, ``VFM_MODEL_KWARGS``: 96 px input, 8 px patches) trained by self-distillation on the world's train
images only, with the DINO / iBOT / DINOv2 recipe. It never sees a label or a caption; labels are read only
afterwards, by the probes of its report.

What the ``lightly`` library provides (used as is): the multi-crop augmentation (``DINOTransform``), the masked ViT
wrapper around the timm model (``MaskedVisionTransformerTIMM``: mask token, registers, position tables resampled to
the local crops' grid), DINOv2's random block masks (``random_block_mask``), the projection heads
(``DINOProjectionHead``: MLP, L2 bottleneck, weight-normalised prototype layer), the DINO loss (cross-entropy over
crop pairs with teacher centring), the iBOT patch loss (``IBOTPatchLoss``, or ``IBOTPlusPlusPatchLoss`` which also
supervises the visible patches), the EMA update (``update_momentum``) and ``cosine_schedule``. What this file adds:
the wiring of student and EMA teacher (:class:`SelfDistillation`), the step (:func:`self_distillation_loss`), the
schedules, the seeded training loop, the official-DINOv2 export, the cache entry and the probes.

Recipe (defaults): each step draws ``batch_size`` train scenes; ``DINOTransform`` makes 2 global crops (96 px, 0.4-1
of the area) and ``local_crops`` local crops (48 px = 6 x 6 patches, 0.1-0.4 of the area), flipped at random. The
photometric jitter is MILD on purpose: colour is what separates regions in this world, so brightness / contrast
+-``colour_jitter``, saturation +-``colour_jitter``/2, no hue shift, no greyscale, no solarisation, a light blur
(sigma 0.1-1 px; probability 0.5 / 0.1 / 0.2 for global 1 / global 2 / locals). The EMA teacher sees the two
global crops; the student sees them with DINOv2 block masks (half the crops, 10-50 % of their patches) and the local
crops. Loss = DINO loss on the CLS token (every student crop predicts the teacher's centred, sharpened prototype
distribution of the other global crop) + ``patch_weight`` x iBOT loss (each masked student patch predicts the
teacher's patch-prototype distribution at that position; separate heads, ``out_dim`` prototypes each). Teacher
temperature warms up linearly from 0.04 to ``teacher_temp`` over the first 30 % of the steps, the student's is
0.1; EMA momentum follows a cosine from ``momentum`` to 1; AdamW with linear warm-up + cosine learning rate, weight
decay cosine 0.04 -> 0.4 (not on norms, biases, tokens, position table), gradients clipped at 3. The saved backbone
is the EMA teacher's (as DINO evaluates it).

The EMA momentum starts at 0.9, not DINO's 0.996: 300 steps are ~5 epochs of the 2000 train scenes, and a slower
teacher stays close to its random init (the teacher is what is saved and probed).

Measured on the default world (2000 train scenes; 300 steps of 32 scenes, 1 torch thread on 2 AMD EPYC cores shared
with other jobs, load ~7-9: 470-750 s, 0.4-0.65 step/s; not measured on idle cores: a step runs about twice
vfm_pretrain.py's tokens, which take 0.28 s there, so ~0.6 s/step, ~3 min, is expected).
Selection probe (within-image thing precision, ``probes.within_image_neighbours``, val scenes 100-199, chance 0.06),
random init 0.417: iBOT with momentum 0.99: 0.503; iBOT++ (all patches, momentum 0.99): 0.435; iBOT with momentum
0.9: 0.519 (the default). The default on val scenes 0-99 (``patch_knn_accuracy``, trained vs random init):
within-image thing precision 0.540 vs 0.455, within-image precision 0.870 vs 0.851, k-NN thing patch accuracy 0.423
vs 0.393, affinity AUC 0.968 vs 0.951 (things 0.911 vs 0.870). vfm_pretrain.py's dense InfoNCE teacher: 0.546
within-image thing precision but k-NN thing accuracy 0.30 (below its random init); this one improves both.

The weights are saved in the official DINOv2 layout (``vfm_pretrain.timm_to_official_dinov2``, with the trained
mask token), so ``VFMTeacher(arch='dinov2_vits14_reg', checkpoint=path, model_kwargs=VFM_MODEL_KWARGS)`` loads them.
"""
import contextlib
import copy
import random
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .cache import cached_paths, publish, save_with_report
from .data import load_split
from .training import cosine_lr, progress_bar
from .vfm_pretrain import VFM_ARCH, VFM_MODEL_KWARGS, timm_to_official_dinov2, vfm_teacher_cfg
from .world import read_world_params

DINO_TRAINING_VERSION = 1    # bump with any change here or in data.py that alters the trained weights
LOCAL_SIZE = 48              # local crops: 6 x 6 patches of 8 px
PATCH_LOSSES = ('ibot', 'ibot++')


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy's and python's global generators (lightly's transforms and masks draw from all three)
    for the block, then put their states back."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def multi_crop_transform(global_size: int, local_crops: int, global_scale: Tuple[float, float],
                         local_scale: Tuple[float, float], colour_jitter: float):
    """lightly's ``DINOTransform`` with mild photometry: uint8 (3, H, W) -> [2 global (3, G, G), local_crops
    (3, 48, 48)] ImageNet-normalised views."""
    from lightly.transforms import DINOTransform

    from declip_mm.constants import IMAGENET_MEAN, IMAGENET_STD
    return DINOTransform(
        global_crop_size=global_size, global_crop_scale=tuple(global_scale), local_crop_size=LOCAL_SIZE,
        local_crop_scale=tuple(local_scale), n_local_views=local_crops, hf_prob=0.5,
        cj_prob=0.8, cj_strength=1.0, cj_bright=colour_jitter, cj_contrast=colour_jitter, cj_sat=colour_jitter / 2,
        cj_hue=0.0, random_gray_scale=0.0, gaussian_blur=(0.5, 0.1, 0.2), sigmas=(0.1, 1.0), solarization_prob=0.0,
        normalize=dict(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)))


class SelfDistillation(nn.Module):
    """Student and EMA teacher: a masked timm DINOv2-with-registers backbone + a CLS head and a patch head each.

    Args:
        arch (str): a ``VFM_ARCHS`` DINOv2-with-registers name. model_kwargs (dict): timm arguments.
        out_dim (int): prototypes per head. hidden_dim / bottleneck_dim (int): the heads' MLP sizes.
    """

    def __init__(self, arch: str = VFM_ARCH, model_kwargs: Optional[Dict] = None, out_dim: int = 256,
                 hidden_dim: int = 256, bottleneck_dim: int = 64):
        super().__init__()
        import timm
        from lightly.models.modules import DINOProjectionHead, MaskedVisionTransformerTIMM

        from declip_mm.models.teachers.vfm import VFM_ARCHS
        vit = timm.create_model(VFM_ARCHS[arch], pretrained=False, num_classes=0, dynamic_img_size=True,
                                **dict(model_kwargs or VFM_MODEL_KWARGS))
        # 'skip': keep timm's DINOv2 init and its learned position table (lightly's default is MAE's sin-cos)
        self.student = MaskedVisionTransformerTIMM(vit, weight_initialization='skip', pos_embed_initialization='skip')
        self.student_cls_head = DINOProjectionHead(vit.embed_dim, hidden_dim, bottleneck_dim, out_dim)
        self.student_patch_head = DINOProjectionHead(vit.embed_dim, hidden_dim, bottleneck_dim, out_dim)
        self.teacher = copy.deepcopy(self.student)
        # weight-normalised layers cannot be deep-copied: the teacher heads are built and loaded instead
        self.teacher_cls_head = DINOProjectionHead(vit.embed_dim, hidden_dim, bottleneck_dim, out_dim)
        self.teacher_patch_head = DINOProjectionHead(vit.embed_dim, hidden_dim, bottleneck_dim, out_dim)
        self.teacher_cls_head.load_state_dict(self.student_cls_head.state_dict())
        self.teacher_patch_head.load_state_dict(self.student_patch_head.state_dict())
        for module in self.teacher_modules():
            module.requires_grad_(False)
        self.num_prefix = vit.num_prefix_tokens
        self.grid = tuple(vit.patch_embed.grid_size)

    def student_modules(self) -> List[nn.Module]:
        return [self.student, self.student_cls_head, self.student_patch_head]

    def teacher_modules(self) -> List[nn.Module]:
        return [self.teacher, self.teacher_cls_head, self.teacher_patch_head]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
        from lightly.models.utils import update_momentum
        for student, teacher in zip(self.student_modules(), self.teacher_modules()):
            update_momentum(student, teacher, momentum)

    def teacher_state_dict(self) -> Dict[str, torch.Tensor]:
        """The EMA teacher's backbone in the official DINOv2 layout (its trained mask token included)."""
        state = timm_to_official_dinov2({k: v.detach() for k, v in self.teacher.vit.state_dict().items()})
        state['mask_token'] = self.teacher.mask_token.detach().reshape(1, -1).clone()
        return state


def block_masks(batch: int, grid: Tuple[int, int], mask_ratio: Tuple[float, float], mask_share: float) -> torch.Tensor:
    """DINOv2's block masks (lightly's ``random_block_mask``): (batch, h, w) bool, ``mask_share`` of the images
    masked, each over ``mask_ratio`` (min, max) of its patches."""
    from lightly.models.utils import random_block_mask
    return random_block_mask((batch, *grid), batch_mask_ratio=mask_share, min_image_mask_ratio=mask_ratio[0],
                             max_image_mask_ratio=mask_ratio[1])


def self_distillation_loss(model: SelfDistillation, global_views: torch.Tensor, local_views: Optional[torch.Tensor],
                           masks: torch.Tensor, dino_loss, patch_loss, teacher_temp: float,
                           patch_weight: float) -> Tuple[torch.Tensor, Dict[str, float]]:
    """One step's loss. global_views (2, B, 3, G, G), local_views (L, B, 3, S, S) or None, masks (2 * B, h, w) bool
    for the student's global crops -> (loss, its parts)."""
    n_global, b = global_views.shape[:2]
    p = model.num_prefix
    g = global_views.flatten(0, 1)
    with torch.no_grad():
        t_tokens = model.teacher.encode(g)                                          # (2B, p + h*w, C)
        t_cls = model.teacher_cls_head(t_tokens[:, 0]).chunk(n_global)
    token_mask = torch.cat([masks.new_zeros(len(masks), p), masks.flatten(1)], 1)
    s_tokens = model.student.encode(g, mask=token_mask)
    s_cls = list(model.student_cls_head(s_tokens[:, 0]).chunk(n_global))
    if local_views is not None and len(local_views):
        local_cls = model.student_cls_head(model.student.encode(local_views.flatten(0, 1))[:, 0])
        s_cls += list(local_cls.chunk(len(local_views)))
    cls_loss = dino_loss(list(t_cls), s_cls, teacher_temp=teacher_temp)
    parts = dict(dino=float(cls_loss.detach()))
    loss = cls_loss
    if patch_weight > 0 and masks.any():
        t_patches, s_patches = t_tokens[:, p:], s_tokens[:, p:]                        # (2B, h*w, C)
        if patch_loss.__class__.__name__ == 'IBOTPlusPlusPatchLoss':
            with torch.no_grad():
                t_out = model.teacher_patch_head(t_patches)
            term = patch_loss(t_out, model.student_patch_head(s_patches), mask=masks, teacher_temp=teacher_temp)
        else:
            flat = masks.flatten(1)
            with torch.no_grad():
                t_out = model.teacher_patch_head(t_patches[flat])
            term = patch_loss(t_out, model.student_patch_head(s_patches[flat]), mask=masks, teacher_temp=teacher_temp)
        parts['ibot'] = float(term.detach())
        loss = loss + patch_weight * term
    return loss, parts


def _decay_split(modules: Sequence[nn.Module]) -> Tuple[list, list]:
    """Trainable parameters with and without weight decay (none on norms, biases, tokens, the position table)."""
    decay, no_decay = [], []
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            skip = param.ndim < 2 or 'token' in name or 'pos_embed' in name
            (no_decay if skip else decay).append(param)
    return decay, no_decay


def train_self_distillation(images: torch.Tensor, steps: int, batch_size: int = 32, local_crops: int = 4,
                            lr: float = 1e-3, warmup: int = 30, weight_decay: Tuple[float, float] = (0.04, 0.4),
                            momentum: float = 0.9, teacher_temp: float = 0.07, out_dim: int = 256,
                            patch_loss: str = 'ibot', patch_weight: float = 1.0,
                            mask_ratio: Tuple[float, float] = (0.1, 0.5), mask_share: float = 0.5,
                            global_scale: Tuple[float, float] = (0.4, 1.0),
                            local_scale: Tuple[float, float] = (0.1, 0.4),
                            colour_jitter: float = 0.2, seed: int = 0, arch: str = VFM_ARCH,
                            model_kwargs: Optional[Dict] = None, progress: bool = False
                            ) -> Tuple[SelfDistillation, List[Dict[str, float]]]:
    """DINO + iBOT self-distillation on uint8 images (N, 3, H, W) -> (the trained student / EMA teacher pair, the
    loss parts per step). See the module docstring for the recipe."""
    from lightly.loss import DINOLoss, IBOTPatchLoss
    from lightly.loss.ibot_loss import IBOTPlusPlusPatchLoss
    from lightly.utils.scheduler import cosine_schedule
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f'images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}')
    if patch_loss not in PATCH_LOSSES:
        raise ValueError(f'patch_loss must be one of {PATCH_LOSSES}, got {patch_loss!r}')
    if steps < 1 or batch_size < 1 or local_crops < 0:
        raise ValueError(f'need steps >= 1, batch_size >= 1 and local_crops >= 0 (got {steps}, {batch_size}, '
                         f'{local_crops})')
    if not (0 <= mask_ratio[0] <= mask_ratio[1] < 1) or not 0 <= mask_share <= 1:
        raise ValueError(f'need 0 <= mask_ratio[0] <= mask_ratio[1] < 1 and 0 <= mask_share <= 1 '
                         f'(got {mask_ratio}, {mask_share})')
    if not 0 <= momentum <= 1:
        raise ValueError(f'momentum must be in [0, 1], got {momentum}')
    with seeded(seed):
        model = SelfDistillation(arch, model_kwargs, out_dim=out_dim)
        size = model.student.vit.patch_embed.img_size[0]
        transform = multi_crop_transform(size, local_crops, global_scale, local_scale, colour_jitter)
        dino_loss = DINOLoss(output_dim=out_dim, teacher_temp=teacher_temp, student_temp=0.1, center_momentum=0.9)
        patch_criterion = (IBOTPlusPlusPatchLoss if patch_loss == 'ibot++' else IBOTPatchLoss)(
            output_dim=out_dim, teacher_temp=teacher_temp, student_temp=0.1, center_momentum=0.9)
        decay, no_decay = _decay_split(model.student_modules())
        optimizer = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay[0]),
                                       dict(params=no_decay, weight_decay=0.0)], lr=lr)
        temp_warmup = max(1, int(0.3 * steps))
        # lightly's transforms are ~10x faster on PIL images than on uint8 tensors (and thread-free)
        pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
        order = np.random.default_rng(seed)
        history = []
        bar = progress_bar(steps, 'pretrain DINO', progress)
        for module in model.student_modules():
            module.train()
        for step in range(steps):
            for group in optimizer.param_groups:
                group['lr'] = lr * cosine_lr(step, steps, warmup)
            optimizer.param_groups[0]['weight_decay'] = cosine_schedule(step, steps, *weight_decay)
            batch = order.choice(len(images), batch_size, replace=len(images) < batch_size)
            views = [transform(pil_images[i]) for i in batch]                           # B x [2 + L views]
            global_views = torch.stack([torch.stack([v[i] for v in views]) for i in range(2)])
            local_views = torch.stack([torch.stack([v[i] for v in views]) for i in range(2, 2 + local_crops)]) \
                if local_crops else None
            masks = block_masks(2 * batch_size, model.grid, mask_ratio, mask_share)
            temp = 0.04 + (teacher_temp - 0.04) * min(1.0, step / temp_warmup)
            loss, parts = self_distillation_loss(model, global_views, local_views, masks, dino_loss, patch_criterion,
                                                 temp, patch_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decay + no_decay, 3.0)
            optimizer.step()
            model.update_teacher(cosine_schedule(step, steps, momentum, 1.0))
            history.append(dict(loss=float(loss.detach()), **parts))
            bar.update()
            bar.set_postfix(loss=f'{history[-1]["loss"]:.3f}')
        bar.close()
    return model, history


def teacher_features(checkpoint, arch: str, model_kwargs: Dict, seed: int):
    """uint8 images (B, 3, H, W) -> (B, h*w, C) patch tokens of ``VFMTeacher`` (``checkpoint`` None: random init
    drawn with ``seed``), resized to its input and ImageNet-normalised; and its token grid side."""
    from declip_mm.models.teachers.vfm import IMAGENET_MEAN, IMAGENET_STD, VFMTeacher
    with seeded(seed):
        teacher = VFMTeacher(arch=arch, checkpoint=None if checkpoint is None else str(checkpoint),
                             model_kwargs=model_kwargs)
    size = teacher.model.patch_embed.img_size[0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def features_of(images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(size, size), mode='bilinear', antialias=True, align_corners=False)
        return teacher((x - mean) / std)
    return features_of, size // teacher.patch_size


@torch.no_grad()
def within_image_probe(features_of, world_root, grid: int, scenes: Tuple[int, int], batch_size: int = 32) -> Dict:
    """``probes.within_image_neighbours`` on val scenes [scenes[0], scenes[1]) (the recipe-selection range)."""
    from .probes import patch_labels, within_image_neighbours
    data = load_split(world_root, 'val', scenes[1])
    images, labels = data.images[scenes[0]:], data.labels[scenes[0]:]
    if not len(images):
        raise ValueError(f'no val scenes in {scenes} (the world has {len(data.images)})')
    feats = torch.cat([F.normalize(features_of(images[i:i + batch_size]).float(), dim=-1)
                       for i in range(0, len(images), batch_size)])
    return dict(within_image_neighbours(feats, patch_labels(labels, grid)), val_scenes=list(scenes))


def pretrain_dino(world_root, out_path=None, steps: int = 300, batch_size: int = 32, local_crops: int = 4,
                  lr: float = 1e-3, warmup: int = 30, momentum: float = 0.9, teacher_temp: float = 0.07,
                  out_dim: int = 256, patch_loss: str = 'ibot', patch_weight: float = 1.0,
                  mask_ratio: Tuple[float, float] = (0.1, 0.5), global_scale: Tuple[float, float] = (0.4, 1.0),
                  local_scale: Tuple[float, float] = (0.1, 0.4), colour_jitter: float = 0.2, seed: int = 0,
                  arch: str = VFM_ARCH, model_kwargs: Optional[Dict] = None, cache_dir: Optional[str] = None,
                  progress: bool = True, probe_scenes: Optional[Tuple[int, int]] = (200, 100),
                  selection_scenes: Optional[Tuple[int, int]] = (100, 200)) -> Tuple[Path, Dict]:
    """DINO + iBOT self-distillation of the context teacher on the world's train images; cached (kind 'dino').

    Returns (path of the EMA teacher's official-layout state dict, ``vfm_teacher`` config for the distiller). The
    report (``read_report(path)``) holds the recipe, the loss parts per step, the time, the threads,
    ``knn_probe`` (``probes.patch_knn_accuracy``, ``probe_scenes`` = (train, first val) scenes, as vfm_pretrain.py)
    and ``selection_probe`` (within-image neighbours on val scenes ``selection_scenes`` = [start, stop), the range
    the default recipe was chosen on), each for 'trained' and 'random_init'.
    """
    from declip_mm.models.teachers.vfm import VFM_ARCHS
    if arch not in VFM_ARCHS or not arch.endswith('_reg'):
        raise ValueError(f"pretrain_dino trains a DINOv2-with-registers arch (e.g. '{VFM_ARCH}'), got '{arch}'")
    if patch_loss not in PATCH_LOSSES:
        raise ValueError(f'patch_loss must be one of {PATCH_LOSSES}, got {patch_loss!r}')
    if steps < 1 or batch_size < 1:
        raise ValueError(f'need steps >= 1 and batch_size >= 1, got {steps} and {batch_size}')
    model_kwargs = dict(model_kwargs or VFM_MODEL_KWARGS)
    recipe = dict(arch=arch, model_kwargs=model_kwargs, steps=steps, batch_size=batch_size, local_crops=local_crops,
                  lr=lr, warmup=warmup, weight_decay=[0.04, 0.4], momentum=momentum, teacher_temp=teacher_temp,
                  out_dim=out_dim, patch_loss=patch_loss, patch_weight=patch_weight, mask_ratio=list(mask_ratio),
                  mask_share=0.5, global_scale=list(global_scale), local_scale=list(local_scale),
                  colour_jitter=colour_jitter, seed=seed)
    path, out_path, hit = cached_paths('dino', world_root, recipe, DINO_TRAINING_VERSION, cache_dir, out_path,
                                       'dino.pt')
    if hit:
        final = publish(path, out_path)
        return final, vfm_teacher_cfg(final, arch, model_kwargs)

    images = load_split(world_root, 'train').images
    train_args = {k: v for k, v in recipe.items() if k not in ('weight_decay', 'mask_share')}
    start = time.perf_counter()
    model, history = train_self_distillation(images, progress=progress, **train_args)
    train_seconds = time.perf_counter() - start
    state_dict = model.teacher_state_dict()
    report = dict(recipe=recipe, world=read_world_params(world_root), losses=[h['loss'] for h in history],
                  loss_parts={k: [h.get(k) for h in history] for k in ('dino', 'ibot')},
                  train_seconds=train_seconds, steps_per_second=steps / train_seconds,
                  threads=torch.get_num_threads(), saved='ema_teacher')
    save_with_report(path, state_dict, report)
    if probe_scenes or selection_scenes:
        from .probes import patch_knn_accuracy
        for name, checkpoint in (('trained', path), ('random_init', None)):
            features_of, grid = teacher_features(checkpoint, arch, model_kwargs, seed)
            if probe_scenes:
                report.setdefault('knn_probe', {})[name] = patch_knn_accuracy(
                    features_of, world_root, grid, train_scenes=probe_scenes[0], val_scenes=probe_scenes[1])
            if selection_scenes:
                report.setdefault('selection_probe', {})[name] = within_image_probe(
                    features_of, world_root, grid, tuple(selection_scenes))
        save_with_report(path, state_dict, report)
    final = publish(path, out_path)
    return final, vfm_teacher_cfg(final, arch, model_kwargs)
