"""What tools/train.py and tools/test.py share: reading the config the way mmdet's tools do, building the Runner,
checking checkpoints, and one readable line (exit 2) for a usage error instead of a traceback."""
import difflib
import inspect
import os
import os.path as osp
import sys
import warnings

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
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow checkpoints that hold arbitrary pickled Python objects (can run code: only for '
                             'files you trust; default: tensors, numpy and mmengine types only)')
    return parser


def run_tool(main, prog: str) -> None:
    """Run a tool's ``main()``; a missing file, a refused checkpoint or a bad config becomes one line
    ``PROG: error: ...`` and exit status 2, Ctrl-C exit status 130."""
    from declip_mm.utils import CheckpointError
    try:
        main()
        _close_process_group()
    except (FileNotFoundError, CheckpointError, UsageError) as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        sys.exit(130)


def _close_process_group() -> None:
    """Wait for every rank, then close the distributed process group that mmengine opened and never closes: a
    gloo group left to interpreter exit can abort a rank ('terminate called without an active exception')
    after training has finished."""
    dist = sys.modules.get('torch.distributed')
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class UsageError(Exception):
    """A tool's usage error (reported by :func:`run_tool` as one line)."""


def warn_unknown_keys(cfg: Config) -> list:
    """Top-level config keys that look like a misspelt Runner argument (``param_schedulr``): mmengine ignores
    them silently. Warns for each and returns them."""
    from mmengine.runner import Runner
    known = set(inspect.signature(Runner.__init__).parameters) - {'self'}
    suspects = []
    for key in cfg.keys():
        if key in known or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            suspects.append(key)
            warnings.warn(f"config key '{key}' is not a Runner argument and is ignored; did you mean '{close[0]}'?",
                          stacklevel=2)
    return suspects


def load_config(args) -> Config:
    """Config.fromfile (custom_imports are imported), CLI overrides, launcher and work_dir."""
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if getattr(args, 'trust_checkpoint', False):
        from declip_mm.utils.checkpoint_io import TRUST_ENV
        os.environ[TRUST_ENV] = '1'                 # read by every checkpoint load of this process (and workers)
    try:
        cfg = Config.fromfile(args.config)
    except (SyntaxError, NameError, KeyError, ValueError, TypeError, ImportError) as err:
        raise UsageError(f'cannot read config {args.config}: {type(err).__name__}: {err}') from None
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    warn_unknown_keys(cfg)
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
    """Point the config at ``checkpoint``, or refuse it; never evaluate other weights than the file's.

    * a DeCLIPViT backbone checkpoint (``meta.declip``, e.g. ``declip_backbone_final.pth``) becomes the
      DeCLIPViT's ``pretrained``: its stored mode and attention scale are restored -> ``'backbone'``;
    * a whole-model checkpoint with keys under the config's sub-modules (``backbone.``, ``neck.``...; with a
      backbone in the config, its ``backbone.`` keys must be there), or saved by an mmengine Runner for a model
      whose config names no sub-modules, is loaded into the model (``load_from``) -> ``'load_from'``; a
      distillation checkpoint (``student.``) given to a model with a backbone is refused, pointing to the
      exported backbone;
    * a CLIP weights file (open_clip or the authors' EVA-CLIP/DeCLIP format, keys ``visual.*``, e.g. the
      authors' released ``.pt``) becomes the DeCLIPViT's ``pretrained`` with ``strict=True``: a key mismatch
      raises a ``KeyError`` listing the keys -> ``'backbone-weights'``;
    * anything else raises a ``ValueError`` naming the file, what it is and its first keys.

    What the file is comes from ``declip_mm.models.backbones.checkpoints`` (which reads it safely); this function
    only edits the config.
    """
    from declip_mm.models.backbones import checkpoints
    found = checkpoints.read_checkpoint(checkpoint)   # safe: CheckpointError (a ValueError) for what it refuses
    backbone = cfg.model.get('backbone') or cfg.model.get('student')
    is_declip = backbone is not None and backbone.get('type') in ('DeCLIPViT', 'declip_mm.DeCLIPViT')
    if found.format == checkpoints.DECLIP_VIT:
        if not is_declip:
            raise ValueError(f'{checkpoint} is a DeCLIPViT backbone checkpoint, but the config has no DeCLIPViT '
                             'model.backbone to load it into')
        if backbone.get('model_name') != found.meta['model_name']:
            raise ValueError(f"{checkpoint} holds a '{found.meta['model_name']}' backbone, the config builds "
                             f"'{backbone.get('model_name')}'")
        backbone.pretrained = checkpoint
        return 'backbone'
    if found.state_dict is None:
        raise ValueError(f'{checkpoint} holds no state dict ({found.problem})')
    keys = list(found.state_dict)
    submodules = {name for name, value in cfg.model.items() if isinstance(value, dict) and 'type' in value}
    saved_by_runner = found.saved_by_runner
    prefixes = found.prefixes
    if is_declip and 'backbone' in cfg.model and 'backbone' not in prefixes and 'student' in prefixes:
        raise ValueError(f'{checkpoint} is a distillation checkpoint (student.* keys): evaluate the exported '
                         'declip_backbone_final.pth (or declip_backbone_epoch_E.pth) of that run instead')
    if keys and (prefixes & submodules or (saved_by_runner and not submodules)):
        if 'backbone' in submodules and 'backbone' not in prefixes:
            raise ValueError(f'{checkpoint} has no backbone.* keys, so this model\'s backbone would keep its '
                             f'initial weights; its top-level keys: {sorted(prefixes)[:8]}')
        cfg.load_from = checkpoint
        if is_declip and 'backbone' in prefixes:
            backbone.pretrained = None              # the checkpoint holds the backbone; no weights file needed
        return 'load_from'
    if is_declip and found.format in checkpoints.CLIP_FORMATS:
        backbone.pretrained = checkpoint
        backbone.strict = True
        return 'backbone-weights'
    hint = ' (convert it with tools/converters/catseg_d2_to_declip.py)' if found.format == checkpoints.CATSEG_D2 else ''
    raise ValueError(
        f'{checkpoint} matches neither this model (no keys under {sorted(submodules)}) nor a CLIP weights file '
        f"for a DeCLIPViT backbone (keys 'visual.*'); it is {found.describe()}{hint}; its first keys: {keys[:5]}")


def missing_model_keys(model, checkpoint: str) -> tuple:
    """(missing, unexpected) parameter/buffer names of ``model`` against a whole-model ``checkpoint`` (after
    mmengine's ``module.`` prefix is dropped): what ``load_from`` would leave at its initial values."""
    from declip_mm.models.backbones.checkpoints import read_checkpoint
    model = getattr(model, 'module', model)
    saved = {k[len('module.'):] if k.startswith('module.') else k
             for k in read_checkpoint(checkpoint).require_state_dict()}
    wanted = set(model.state_dict())
    return sorted(wanted - saved), sorted(saved - wanted)


def check_complete_checkpoint(model, checkpoint: str, allow_partial: bool = False) -> None:
    """Refuse (:class:`UsageError` listing them) a whole-model checkpoint that leaves model weights missing,
    unless ``allow_partial`` (then warn)."""
    missing, unexpected = missing_model_keys(model, checkpoint)
    if unexpected:
        warnings.warn(f'{checkpoint}: {len(unexpected)} keys not in this model, ignored: {unexpected[:8]}')
    if not missing:
        return
    message = (f'{checkpoint} leaves {len(missing)} of the model\'s weights at their initial (random) values: '
               f'{missing[:8]}{" ..." if len(missing) > 8 else ""}')
    if not allow_partial:
        raise UsageError(message + ' (is it a checkpoint of this config\'s model? --allow-partial loads it anyway)')
    warnings.warn(message)


def metrics_table(metrics: dict) -> str:
    """The metrics ``Runner.test()`` returns as a two-column markdown table (full precision), which
    tools/eval_benchmarks.py reads back with ``read_metrics_table``."""
    def cell(v):
        try:
            return repr(float(v))       # numpy scalars too, at full precision
        except (TypeError, ValueError):
            return str(v)
    rows = ['| metric | value |', '|---|---|'] + [f'| {k} | {cell(v)} |' for k, v in metrics.items()]
    return '\n'.join(rows)


def read_metrics_table(text: str) -> dict:
    """The {metric: float} of the last table ``metrics_table`` printed in ``text`` ({} if none)."""
    blocks = text.split('| metric | value |')
    if len(blocks) < 2:
        return {}
    found = {}
    for line in blocks[-1].splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if not line.startswith('|') or len(cells) != 2:
            break
        try:
            found[cells[0]] = float(cells[1])
        except ValueError:
            continue
    return found
