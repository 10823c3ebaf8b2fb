"""The proof's diffusion teacher: a small pixel-space DDPM (diffusers ``UNet2DModel`` with attention blocks at the
coarse resolutions, ``DDPMScheduler`` with 1000 steps, epsilon prediction, MSE) trained on the world's train
images only, at ``DIFFUSION_SIZE`` px. It never sees a label or a caption; labels are read only afterwards, by
:func:`attention_grouping`.

The UNet (1.2 M parameters) has three levels (32, 16 and 8 px at the 32 px training size: the 128 px scenes
downsampled 4x, which keeps colour and shape and loses the finest texture; 64 px was 2-3x slower per step on the
shared cores); the two coarse ones hold attention (``down_blocks.1``, ``down_blocks.2``, ``mid_block``,
``up_blocks.0``, ``up_blocks.1``). The 16 x 16 level is the distillation's VFM token grid (128 px scenes, 8 px
patches), so the ``up_blocks.1`` attention needs no resizing when the teacher's view is ``DIFFUSION_SIZE`` px
(the distillation dataset's ``sd_size``); the 8 x 8 ``mid_block`` attention is resized to it. The captured layers
(``DIFFUSION_LAYERS``: ``mid_block`` then ``up_blocks.1``, fused) and the timestep (100 of 1000, the paper's
ratio 0.1) were selected on val scenes 100-199.
:func:`pretrain_diffusion` returns the distiller's ``diffusion_teacher`` config (``DiffusionTeacher`` loads the
folder's pixel-space layout ``unet/`` + ``scheduler/``).

The probe (:func:`attention_grouping`): per val scene, A_sd on the 16 x 16 grid, symmetrised; its AUC for telling
"patches i and j carry the same label" (label at the patch centre) over the pairs i < j of the scene, averaged
over scenes; the same for the VFM affinity S_vfm = cos(f_i, f_j) alone and completed, A_sd @ S_vfm (symmetrised).

Measured on the default world (2000 train scenes; the default recipe, 120 steps of batch 16, 821 s on 2 shared,
heavily loaded AMD EPYC cores; ~3.5x slower than idle). Selection, val 100-199, trained / random init A_sd AUC
(completed AUC trained / random; S_vfm alone 0.973): ``up_blocks.1`` t=100 0.525 / 0.497 (0.614 / 0.635);
``up_blocks.1`` t=250 0.518 / 0.496 (0.622 / 0.636); ``down_blocks.1`` + ``up_blocks.1`` t=100 0.529 / 0.497
(0.616 / 0.635); ``mid_block`` + ``up_blocks.1`` t=100 0.531 / 0.497 (0.618 / 0.635), selected. Val 0-99 with it:
A_sd 0.512 trained / 0.504 random; S_vfm 0.972; A_sd @ S_vfm 0.611 trained / 0.628 random. So this small, briefly
trained UNet's attention is barely better than chance at grouping, and completing the VFM affinity with it makes
the target much worse: A_sd is diffuse, so A_sd @ S_vfm averages S_vfm's rows over much of the image.
"""
import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .cache import cache_key, proof_cache_dir
from .data import load_split
from .training import cosine_lr, optimise
from .world import read_world_params

DIFFUSION_TRAINING_VERSION = 1    # bump with any change here or in data.py that alters the trained weights
DIFFUSION_SIZE = 32               # training side and the teacher's view (the distillation's sd_size)
UNET_CONFIG = dict(sample_size=DIFFUSION_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
                   block_out_channels=(32, 64, 64),
                   down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
                   up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
                   attention_head_dim=32, norm_num_groups=8)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule='linear', prediction_type='epsilon')
DIFFUSION_LAYERS = ('mid_block.attentions.*', 'up_blocks.1.attentions.*')   # selected on val 100-199
DIFFUSION_TIMESTEP = 100          # the paper's ratio 0.1 of the 1000 training steps
GRID = 16                         # the distillation's VFM token grid


def diffusion_teacher_cfg(folder, timestep: int = DIFFUSION_TIMESTEP,
                          layers: Sequence[str] = DIFFUSION_LAYERS) -> Dict:
    """The distiller's ``diffusion_teacher`` config for a pretrained proof diffusion folder."""
    return dict(type='DiffusionTeacher', folder=str(folder), timestep=timestep, layers=list(layers), dtype='fp32')


def write_folder(folder: Path, unet, scheduler) -> None:
    """``<folder>/unet`` and ``<folder>/scheduler`` with diffusers' ``save_pretrained``."""
    unet.save_pretrained(folder / 'unet')
    scheduler.save_pretrained(folder / 'scheduler')


def random_init_folder(folder: Path, unet_config: Optional[Dict] = None, seed: int = 0) -> Path:
    """The same architecture with random weights, in the same layout (the probe's baseline)."""
    from diffusers import DDPMScheduler, UNet2DModel
    torch.manual_seed(seed)
    write_folder(Path(folder), UNet2DModel(**dict(unet_config or UNET_CONFIG)), DDPMScheduler(**SCHEDULER_CONFIG))
    return Path(folder)


def is_complete(folder: Path) -> bool:
    return all((folder / sub / name).is_file() for sub, name in
               (('unet', 'config.json'), ('scheduler', 'scheduler_config.json'))) and \
        (folder / 'diffusion.json').is_file()


def read_diffusion_report(folder) -> Dict:
    """The ``diffusion.json`` report in a pretrained folder."""
    return json.loads((Path(folder) / 'diffusion.json').read_text())


def _publish(folder: Path, out_path: Optional[Path]) -> Path:
    if out_path is None or out_path.resolve() == folder.resolve():
        return folder
    if out_path.exists():
        shutil.rmtree(out_path)
    shutil.copytree(folder, out_path)
    return out_path


def _cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown'


def pretrain_diffusion(world_root, out_path=None, steps: int = 120, batch_size: int = 16, lr: float = 1e-3,
                       weight_decay: float = 0.0, warmup: int = 20, seed: int = 0,
                       unet_config: Optional[Dict] = None, cache_dir: Optional[str] = None, progress: bool = True,
                       probe_scenes: Optional[Tuple[int, int]] = (100, 200)) -> Tuple[Path, Dict]:
    """DDPM pretraining of the diffusion teacher on the world's train images; cached.

    Returns (folder with ``unet/``, ``scheduler/`` and the report ``diffusion.json``, ``diffusion_teacher``
    config). The report holds the recipe, the loss per step, the time, and :func:`attention_grouping` on the val
    scenes ``probe_scenes`` (start, stop) of the trained UNet and of random weights.
    """
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel

    from declip_mm.models.teachers.diffusion import DiffusionTeacher
    unet_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(unet_config or UNET_CONFIG).items()}
    recipe = dict(unet=unet_config, scheduler=SCHEDULER_CONFIG, steps=steps, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, warmup=warmup, seed=seed, diffusers=diffusers.__version__)
    folder = proof_cache_dir(cache_dir) / cache_key('diffusion', read_world_params(world_root), recipe,
                                                    DIFFUSION_TRAINING_VERSION)
    out_path = Path(out_path) if out_path else None
    if is_complete(folder):
        final = _publish(folder, out_path)
        return final, diffusion_teacher_cfg(final)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    unet = UNet2DModel(**unet_config)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    size = unet_config['sample_size']
    images = load_split(world_root, 'train').images
    x0_all = F.interpolate(images.float() / 255, size=(size, size), mode='bilinear', antialias=True,
                           align_corners=False) * 2 - 1                                  # (N, 3, S, S) in [-1, 1]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup))
    unet.train()

    def loss_of_step(step: int) -> torch.Tensor:
        x0 = x0_all[rng.choice(len(x0_all), batch_size, replace=len(x0_all) < batch_size)]
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,))
        return F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
    losses, train_seconds = optimise(steps, loss_of_step, list(unet.parameters()), optimizer, lr_schedule,
                                     'pretrain diffusion', progress)
    report = dict(recipe=recipe, world=read_world_params(world_root), losses=losses, train_seconds=train_seconds,
                  steps_per_second=steps / train_seconds, threads=torch.get_num_threads(), cpu=_cpu_name())
    tmp = folder.with_name(folder.name + '.tmp')
    if tmp.exists():
        shutil.rmtree(tmp)
    unet.eval()
    write_folder(tmp, unet, scheduler)
    if probe_scenes:
        with tempfile.TemporaryDirectory() as random_dir:
            report['grouping_probe'] = dict(
                trained=attention_grouping(DiffusionTeacher(str(tmp), **_teacher_kwargs()), world_root, probe_scenes),
                random_init=attention_grouping(
                    DiffusionTeacher(str(random_init_folder(Path(random_dir), unet_config, seed)),
                                     **_teacher_kwargs()), world_root, probe_scenes))
    (tmp / 'diffusion.json').write_text(json.dumps(report, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    final = _publish(folder, out_path)
    return final, diffusion_teacher_cfg(final)


def _teacher_kwargs() -> Dict:
    return {k: v for k, v in diffusion_teacher_cfg('').items() if k not in ('type', 'folder')}


@torch.no_grad()
def attention_grouping(teacher, world_root, scenes: Tuple[int, int] = (100, 200), vfm=None,
                       vfm_size: int = 128, grid: int = GRID, batch_size: int = 20) -> Dict:
    """AUC of A_sd (and, with a ``VFMTeacher`` ``vfm``, of S_vfm and A_sd @ S_vfm) for same-label patch pairs
    (``probes.segment_affinity_auc``, the mean over images).

    ``teacher``: a ``DiffusionTeacher``, fed the val scenes ``scenes`` (start, stop) at its UNet's ``sample_size``
    in [-1, 1]; ``vfm`` is fed them at ``vfm_size`` px, ImageNet-normalised. Labels: ``probes.patch_labels``.
    """
    from declip_mm.models.losses import complete_with_diffusion, cosine_matrix
    from declip_mm.models.teachers.vfm import IMAGENET_MEAN, IMAGENET_STD
    from .probes import patch_labels, segment_affinity_auc
    data = load_split(world_root, 'val', scenes[1])
    images, labels = data.images[scenes[0]:], patch_labels(data.labels[scenes[0]:], grid)
    size = teacher.unet.config.sample_size
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / 255
    totals = dict(diffusion=[0.0, 0], vfm=[0.0, 0], completed=[0.0, 0])
    for i in range(0, len(images), batch_size):
        x, y = images[i:i + batch_size].float() / 255, labels[i:i + batch_size]
        view = F.interpolate(x, size=(size, size), mode='bilinear', antialias=True, align_corners=False) * 2 - 1
        a_sd = teacher(view, (grid, grid))
        parts = dict(diffusion=a_sd)
        if vfm is not None:
            vx = F.interpolate(x, size=(vfm_size, vfm_size), mode='bilinear', antialias=True, align_corners=False)
            s_vfm = cosine_matrix(vfm((vx - mean) / std))
            parts.update(vfm=s_vfm, completed=complete_with_diffusion(s_vfm, a_sd))
        for name, affinity in parts.items():
            totals[name][0] += segment_affinity_auc(affinity, y)['affinity_auc'] * len(y)
            totals[name][1] += len(y)
    out = {f'{name}_auc': total / count for name, (total, count) in totals.items() if count}
    return dict(out, scenes=list(scenes), images=totals['diffusion'][1], grid=grid,
                layers=list(teacher.layer_names), timestep=teacher.timestep)
