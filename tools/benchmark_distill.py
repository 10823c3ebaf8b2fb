"""Seconds per distillation iteration and peak memory, per config, with and without the teacher-target cache.

    python tools/benchmark_distill.py [--configs CFG ...] [--batch 2] [--iters 3] [--markdown docs/benchmarks.md]

Each configuration runs in a fresh subprocess on the real sample photos (tools/fetch_sample_data.py) with
random weights (no weight files needed): pretrained/checkpoint entries are dropped and the diffusion teacher
is left out unless --with-sd is given and its folder exists. One iteration = data loading of the batch,
teachers, one student forward/backward and the AdamW step (the config's optimizer). With the cache, the
teacher targets are computed in a warm-up pass and then read from disk. Memory: peak RSS growth over the
built model on CPU, torch.cuda.max_memory_allocated on CUDA.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

DEFAULT_CONFIGS = [
    'configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py',
    'configs/distill/declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py',
    'configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py',
]


def measure(config, batch, iters, cache, with_sd, device):
    import declip_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import set_random_seed

    from declip_mm.datasets import declip_distill_collate
    from declip_mm.datasets.sample_data import fetch_sample_data
    from declip_mm.registry import DATASETS, MODELS, OPTIMIZERS

    sys.path.insert(0, os.path.dirname(__file__))
    from benchmark_backbone import proc_status_mb, reset_cpu_peak

    cfg = Config.fromfile(config)
    model_cfg = cfg.model
    model_cfg.student.pretrained = None
    model_cfg.vfm_teacher.checkpoint = None
    if not (with_sd and model_cfg.get('diffusion_teacher') and os.path.isdir(model_cfg.diffusion_teacher.folder)):
        model_cfg.diffusion_teacher = None
    cache_dir = tempfile.mkdtemp() if cache else None
    model_cfg.teacher_cache = cache_dir
    set_random_seed(0)
    model = MODELS.build(model_cfg).to(device)
    model.place_teachers()
    model.train()
    ds_cfg = dict(cfg.train_dataloader.dataset, data_root=None, img_dir=str(fetch_sample_data() / 'photos'),
                  sd_size=cfg.train_dataloader.dataset.get('sd_size') if model_cfg.diffusion_teacher else None)
    dataset = DATASETS.build(ds_cfg)
    opt_cfg = dict(cfg.optim_wrapper.optimizer)
    optimizer = OPTIMIZERS.build(dict(opt_cfg, params=[p for p in model.parameters() if p.requires_grad]))
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    def step(i):
        samples = [dataset[(i * batch + j) % len(dataset)] for j in range(batch)]
        data = model.data_preprocessor(declip_distill_collate(samples), training=True)
        losses = model.loss(data['inputs'])
        loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()

    if cache:
        for i in range(iters + 1):
            step(i)  # fill the cache for the batches measured below
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2 ** 20
    else:
        base = reset_cpu_peak()
    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(1, iters + 1):
        step(i)
    seconds = (time.perf_counter() - start) / iters
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else proc_status_mb('VmHWM')
    print(json.dumps(dict(config=os.path.basename(config), batch=batch, cache=cache, sd=model.teachers['sd'] is not None,
                          s_per_iter=seconds, peak_mb=peak - base, student=model_cfg.student.model_name,
                          size=ds_cfg['student_size'], device=device)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--with-sd', action='store_true', help='include the diffusion teacher if its folder exists')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--markdown')
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, batch, cache = args.child
        return measure(config, int(batch), args.iters, cache == '1', args.with_sd, args.device)
    rows = []
    for config in args.configs:
        for cache in ('0', '1'):
            cmd = [sys.executable, __file__, '--iters', str(args.iters), '--device', args.device,
                   '--child', config, str(args.batch), cache] + (['--with-sd'] if args.with_sd else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ,
                                  PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            if proc.returncode != 0:
                print(f'{config} cache={cache}: failed\n{proc.stderr[-3000:]}', file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if args.device == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    lines = [f'\n### Distillation iteration, batch {args.batch}, {device}, torch {torch.__version__}\n',
             '| config | student @ size | SD teacher | teacher cache | s / iteration | peak extra memory (MB) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['config']} | {r['student']} @ {r['size']} | {'yes' if r['sd'] else 'no'} | "
                     f"{'on' if r['cache'] else 'off'} | {r['s_per_iter']:.2f} | {r['peak_mb']:.0f} |")
    table = '\n'.join(lines) + '\n'
    print(table)
    if args.markdown:
        with open(args.markdown, 'a') as f:
            f.write(table)


if __name__ == '__main__':
    main()
