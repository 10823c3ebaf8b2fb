"""The ablation's variants and their inputs: which rows the table has (``VARIANTS``: a distillation config under
``projects/proof_world/configs/`` or a training-free mode), what every row is trained and evaluated on
(``ProofInputs``, ``prepare_inputs``: the world, its pretrained CLIP, the context teacher and the diffusion
teacher), and each variant's resolved mmengine config (``distill_config``). The context teachers are
``teachers.py``; running is ``running.py``; the table, plots and overlays are ``reporting.py``."""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a distillation config (None = training-free) and the mode it is evaluated in."""
    name: str
    key: str
    eval_mode: str
    config: Optional[str] = None
    description: str = ''
    uses_teacher: bool = True        # reads the context teacher (False: content-only and the training-free rows)
    uses_diffusion: bool = False     # completes the teacher's affinity with the diffusion teacher (SD-GSC)

    @property
    def distilled(self) -> bool:
        return self.config is not None


VARIANTS = (
    Variant('vanilla CLIP', 'vanilla', 'vanilla', None, 'unmodified last block, no training', False),
    Variant('MaskCLIP', 'maskclip', 'maskclip', None, 'value path of the last block, no training', False),
    Variant('training-free csa', 'csa', 'csa', None, 'q-q + k-k attention in the last block, no training', False),
    Variant('content only (CLIPSelf-like)', 'content_only', 'csa', 'content-only_world-clip_proof-world.py',
            'content loss only', False),
    Variant('joint, no decoupling', 'joint', 'csa', 'joint-no-decoupling_world-clip_world-vfm_proof-world.py',
            'content + context on the same dense features'),
    Variant('context only', 'context_only', 'csa', 'context-only_world-clip_world-vfm_proof-world.py',
            'context loss on q / k only'),
    Variant('DeCLIP', 'declip', 'csa', 'declip_world-clip_world-vfm_proof-world.py',
            'content on the dense map + context on q / k'),
    Variant('DeCLIP + RCC', 'declip_rcc', 'csa', 'declip-rcc_world-clip_world-vfm_proof-world.py',
            'DeCLIP + region correlation constraint'),
    Variant('DeCLIP + SD-GSC', 'declip_sd', 'csa', 'declip-sd_world-clip_world-vfm_world-unet_proof-world.py',
            "DeCLIP, the teacher's affinity completed by the world diffusion UNet's self-attention", uses_diffusion=True),
    Variant('DeCLIP + SD-GSC + RCC', 'declip_sd_rcc', 'csa',
            'declip-sd-rcc_world-clip_world-vfm_world-unet_proof-world.py', 'DeCLIP + SD-GSC + region correlation',
            uses_diffusion=True),
)
VARIANT_BY_KEY = {v.key: v for v in VARIANTS}


@dataclass
class ProofInputs:
    """What the ablation needs from the world and the pretraining (projects/proof_world/proof_world/world.py, pretrain.py).

    world_root: the folder ``write_world`` wrote ({train,val}/{images,labels}, annotations.json).
    model_name: the open_clip model name of the world's CLIP; clip_checkpoint: its open_clip-format weights.
    vfm_teacher: the context teacher's config (``pretrain_vfm``'s VFMTeacher by default; ``teachers.py``).
    teacher: the context teacher's key in ``teachers.TEACHERS`` ('infonce', the default label-free teacher).
    teacher_dataset: extra distillation-dataset options the teacher needs (the oracle's ``label_dir``).
    diffusion_teacher: the DiffusionTeacher config of the world UNet (``pretrain_diffusion``) and ``sd_size``, the
        side of its view; None: the SD-GSC variants cannot run.
    class_names / thing_classes: the world's vocabulary (all classes; the object classes among them).
    templates: the prompt templates the text tower embeds class names with ('imagenet80': the segmentation
        protocol's 80 ImageNet prompts, as the world CLIP's zero-shot probe).
    image_size: the side the student is distilled and evaluated at.
    """
    world_root: Path
    model_name: str
    clip_checkpoint: str
    vfm_teacher: dict
    class_names: List[str]
    thing_classes: List[str]
    templates: Union[str, Sequence[str]] = 'imagenet80'
    image_size: int = 224
    ignore_index: int = 255
    teacher: str = 'infonce'
    teacher_dataset: Dict = field(default_factory=dict)
    diffusion_teacher: Optional[Dict] = None
    sd_size: Optional[int] = None

    def __post_init__(self):
        self.world_root = Path(self.world_root)
        for name in self.thing_classes:
            if name not in self.class_names:
                raise ValueError(f"thing class '{name}' is not among the class names {self.class_names}")


def prepare_inputs(world_root=None, n_train: int = 2000, n_val: int = 200, size: int = 128, world_seed: int = 0,
                   cache_dir: Optional[str] = None, clip_kwargs: Optional[dict] = None,
                   vfm_kwargs: Optional[dict] = None, progress: bool = True, clip_checkpoint: Optional[str] = None,
                   vfm_checkpoint: Optional[str] = None, diffusion: bool = False) -> ProofInputs:
    """Write the world (idempotent) and pretrain its CLIP and VFM (cached by ``projects.proof_world.proof_world.pretrain``);
    ``clip_checkpoint`` / ``vfm_checkpoint`` use weights pretrained before instead (default architectures);
    ``diffusion``: also the world diffusion UNet of the SD-GSC variants (``diffusion_pretrain.py``, cached)."""
    from .cache import default_world_root
    from .pretrain import CLIP_MODEL, pretrain_clip
    from .vfm_pretrain import pretrain_vfm
    from .world import CLASS_NAMES, IGNORE, THING_CLASSES, write_world
    root = Path(world_root) if world_root else default_world_root(n_train, n_val, size, world_seed, cache_dir)
    write_world(root, n_train, n_val, size, world_seed)
    clip_kwargs = dict(clip_kwargs or {})
    for path in (clip_checkpoint, vfm_checkpoint):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f'pretrained weights not found: {path}')
    clip = clip_checkpoint or pretrain_clip(root, cache_dir=cache_dir, progress=progress, **clip_kwargs)
    if vfm_checkpoint:
        from .vfm_pretrain import vfm_teacher_cfg
        vfm_cfg = vfm_teacher_cfg(vfm_checkpoint)
    else:
        _, vfm_cfg = pretrain_vfm(root, cache_dir=cache_dir, progress=progress, **(vfm_kwargs or {}))
    diffusion_cfg, sd_size = None, None
    if diffusion:
        from .diffusion_pretrain import DIFFUSION_SIZE, pretrain_diffusion
        _, diffusion_cfg = pretrain_diffusion(root, cache_dir=cache_dir, progress=progress)
        sd_size = DIFFUSION_SIZE
    return ProofInputs(world_root=root, model_name=clip_kwargs.get('model_name', CLIP_MODEL), clip_checkpoint=str(clip),
                       vfm_teacher=dict(vfm_cfg), class_names=list(CLASS_NAMES), thing_classes=list(THING_CLASSES),
                       image_size=size, ignore_index=IGNORE, diffusion_teacher=diffusion_cfg, sd_size=sd_size)


def distill_config(variant: Variant, inputs: ProofInputs, seed: int, overrides: Optional[dict] = None):
    """The variant's mmengine Config with the world's inputs and the seed filled in (plus ``overrides``,
    dotted keys as ``--cfg-options`` takes them)."""
    from mmengine.config import Config

    from declip_mm.registry import MODELS
    cfg = Config.fromfile(str(CONFIG_DIR / variant.config))
    vision = _vision_cfg(inputs.model_name)
    options = {
        'model.student.model_name': inputs.model_name,
        'model.student.pretrained': str(inputs.clip_checkpoint),
        'model.student.input_size': inputs.image_size,
        'train_dataloader.dataset.data_root': str(inputs.world_root),
        'train_dataloader.dataset.img_dir': 'train/images',
        'train_dataloader.dataset.student_size': inputs.image_size,
        'train_dataloader.dataset.student_patch': vision['patch_size'],
        'train_dataloader.dataset.crop_size': vision['image_size'],      # crops at the CLIP's own resolution
        'train_dataloader.dataset.seed': seed,
        'randomness.seed': seed,
    }
    # the teacher's config replaces the base config's whole (another type takes other arguments)
    options['model.vfm_teacher'] = dict(inputs.vfm_teacher, _delete_=True)
    options.update({f'train_dataloader.dataset.{k}': v for k, v in inputs.teacher_dataset.items()})
    if variant.uses_diffusion:
        if not inputs.diffusion_teacher or not inputs.sd_size:
            raise ValueError(f"variant '{variant.key}' needs the world diffusion teacher (ProofInputs.diffusion_teacher "
                             'and sd_size; prepare_inputs(diffusion=True))')
        options['model.diffusion_teacher'] = dict(inputs.diffusion_teacher, _delete_=True)
        options['train_dataloader.dataset.sd_size'] = inputs.sd_size
    options.update(overrides or {})
    cfg.merge_from_dict(options)
    teacher = MODELS.build(cfg.model.vfm_teacher)
    cfg.train_dataloader.dataset.vfm_patch = int(teacher.patch_size)
    # the cosine must end with the run, whatever max_iters an override set
    for sched in cfg.param_scheduler:
        if sched.get('type') == 'WarmupCosineLR':
            sched.end = cfg.train_cfg.max_iters
    return cfg, options


def _vision_cfg(model_name: str) -> dict:
    import open_clip

    from declip_mm.models import presets  # noqa: F401  (registers the package's open_clip model configs)
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"unknown open_clip model '{model_name}'")
    return config['vision_cfg']
