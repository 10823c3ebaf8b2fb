"""Train with mmengine's Runner: this package's configs and plain mmdet / mmseg configs alike.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [...]          # torchrun, --launcher pytorch

Checkpoints (``--resume``, ``load_from``) are read safely (tensors, numpy and mmengine types only);
``--trust-checkpoint`` allows any pickled object, for files you trust. A missing config or checkpoint, or a file
that is not a checkpoint, is one line and exit status 2; a misspelt top-level config key is warned about.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse

import declip_mm  # noqa: F401  (registers declip_mm modules and the safe checkpoint loader)
from declip_mm.utils.checkpoint_io import check_checkpoint_file
from declip_mm.engine.runner_setup import UsageError, add_common_args, build_runner, load_config, run_tool


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with mmengine (declip-mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or without a value from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (needs a CUDA device)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr by the actual batch size')
    return add_common_args(parser).parse_args()


def main():
    args = parse_args()
    cfg = load_config(args)
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise UsageError('--amp uses mmengine AmpOptimWrapper, which needs a CUDA device; none is visible. '
                             'On CPU, run without --amp.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if not {'enable', 'base_batch_size'} <= set(cfg.get('auto_scale_lr', {})):
            raise UsageError(f'--auto-scale-lr needs auto_scale_lr = dict(enable=..., base_batch_size=...) in '
                             f'{args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint_file(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    if cfg.get('load_from') and not cfg.get('resume'):
        check_checkpoint_file(cfg.load_from)
    build_runner(cfg).train()


if __name__ == '__main__':
    run_tool(main, 'tools/train.py')
