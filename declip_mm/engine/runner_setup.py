"""What tools/train.py and tools/test.py share: reading the config the way mmdet's tools do, building the Runner."""
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def add_common_args(parser):
    """--work-dir, --cfg-options, --launcher and --local-rank, as in mmdet/mmseg tools."""
    parser.add_argument('--work-dir', help='folder for logs and checkpoints (default ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, key=value (lists as key="[a,b]")')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher (pytorch = torchrun, see tools/dist_train.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def load_config(args) -> Config:
    """Config.fromfile (custom_imports are imported), CLI overrides, launcher and work_dir."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def setup_cpu_distributed(cfg: Config) -> None:
    """Let ``--launcher pytorch`` run on CPU processes (gloo): mmengine's own setup calls torch.cuda.set_device
    and wraps DDP with device_ids=[local_rank], both of which need a GPU. We create the gloo process group
    first (mmengine then keeps it) and wrap with device_ids=None."""
    import torch
    import torch.distributed as dist
    if cfg.launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if cfg.launcher != 'pytorch':
        raise SystemExit(f"on CPU only --launcher pytorch (torchrun) is supported, got '{cfg.launcher}'")
    dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def build_runner(cfg: Config) -> Runner:
    """Runner.from_cfg, or the registered runner named by ``runner_type``."""
    setup_cpu_distributed(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def attach_checkpoint(cfg: Config, checkpoint: str) -> str:
    """Point the config at ``checkpoint``. A DeCLIPViT backbone checkpoint (with ``meta.declip``) becomes the
    backbone's ``pretrained``, so its stored mode and attention scale are restored; any other checkpoint is
    loaded into the whole model (``load_from``). Returns which of the two was done."""
    from declip_mm.models.backbones.declip_vit import read_declip_checkpoint
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint}')
    try:
        found = read_declip_checkpoint(checkpoint)
    except RuntimeError:  # holds pickled objects: an mmengine training checkpoint
        found = None
    if found is None:
        cfg.load_from = checkpoint
        return 'load_from'
    backbone = cfg.model.get('backbone') or cfg.model.get('student')
    if backbone is None or backbone.get('type') not in ('DeCLIPViT', 'declip_mm.DeCLIPViT'):
        raise ValueError(f'{checkpoint} is a DeCLIPViT backbone checkpoint, but the config has no DeCLIPViT '
                         'model.backbone to load it into')
    if backbone.get('model_name') != found[1]['model_name']:
        raise ValueError(f"{checkpoint} holds a '{found[1]['model_name']}' backbone, the config builds "
                         f"'{backbone.get('model_name')}'")
    backbone.pretrained = checkpoint
    return 'backbone'
