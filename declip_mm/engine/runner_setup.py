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


def build_runner(cfg: Config) -> Runner:
    """Runner.from_cfg, or the registered runner named by ``runner_type``."""
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
