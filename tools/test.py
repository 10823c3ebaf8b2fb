"""Evaluate a checkpoint with mmengine's Runner (this package's configs and plain mmdet / mmseg configs).

CHECKPOINT may be a whole-model mmengine checkpoint, a DeCLIPViT backbone checkpoint (e.g. the
declip_backbone_final.pth a distillation exports: it becomes model.backbone.pretrained, so the mode and
attention scale it was trained with are used unless the config sets them, as the segmentation configs do),
or a CLIP weights file such as the authors' released DeCLIP ``.pt`` (loaded into the DeCLIPViT backbone with
a strict key check). Any other file is refused with an error that names it
(declip_mm.engine.runner_setup.attach_checkpoint). A whole-model checkpoint must hold every weight of the
config's model (else the missing ones are listed and nothing is evaluated; --allow-partial loads it anyway).
Checkpoints are read safely (tensors, numpy and mmengine types only); --trust-checkpoint allows any pickled
object, for files you trust. Usage errors are one line and exit status 2.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [...]
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import os.path as osp

import declip_mm  # noqa: F401  (registers declip_mm modules and the safe checkpoint loader)
from declip_mm.engine.runner_setup import (UsageError, add_common_args, attach_checkpoint, build_runner,
                                           check_complete_checkpoint, load_config, metrics_table, run_tool)


HOW = {'backbone': "a DeCLIPViT checkpoint (its stored mode and scale, unless the config sets them)",
       'load_from': 'a whole-model checkpoint (load_from)',
       'backbone-weights': "CLIP weights for the DeCLIPViT backbone (strict key check; mode and scale from the config)"}


def parse_args():
    parser = argparse.ArgumentParser(description='Test a model with mmengine (declip-mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file (omit only with --no-checkpoint)')
    parser.add_argument('--no-checkpoint', action='store_true',
                        help="evaluate the config's own weights (e.g. the original CLIP of a training-free config)")
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument('--allow-partial', action='store_true',
                        help='evaluate a whole-model checkpoint that leaves some weights at their initial values')
    return add_common_args(parser).parse_args()


def main():
    args = parse_args()
    if args.no_checkpoint == (args.checkpoint is not None):
        raise UsageError('give either a CHECKPOINT or --no-checkpoint')
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise UsageError(f'--out must end with .pkl or .pickle, got {args.out}')
        if osp.exists(args.out):
            raise UsageError(f'--out {args.out} exists; not overwritten (remove it or choose another name)')
    cfg = load_config(args)
    how = None
    if args.checkpoint is not None:
        try:
            how = attach_checkpoint(cfg, args.checkpoint)
        except (ValueError, KeyError) as err:
            raise UsageError(str(err).strip('"')) from None
        print(f'{args.checkpoint}: used as {HOW[how]}', flush=True)
    if args.out is not None:
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=args.out)]
    runner = build_runner(cfg)
    if how == 'load_from':
        check_complete_checkpoint(runner.model, args.checkpoint, args.allow_partial)
    metrics = runner.test()
    print(f'\n{args.config}\n{metrics_table(metrics)}', flush=True)


if __name__ == '__main__':
    run_tool(main, 'tools/test.py')
