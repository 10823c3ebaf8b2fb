"""Seconds per distillation iteration and peak memory, per config, with and without the teacher-target cache.

    python tools/benchmark_distill.py [--configs CFG ...] [--batch 2] [--iters 3] [--student-size 560]
        [--profile] [--markdown docs/benchmarks.md] [--allow-busy]

Each configuration runs in a fresh subprocess on the real sample photos (tools/fetch_sample_data.py) with
random weights (no weight files needed): pretrained/checkpoint entries are dropped and the diffusion teacher
is left out unless --with-sd is given and its folder exists. One iteration = data loading of the batch,
teachers, one student forward/backward and the AdamW step (the config's optimizer). With the cache, the
teacher targets are computed in a warm-up pass and then read from disk. ``--student-size`` overrides the
config's student view (the VFM view follows it) for a small-size run of a paper config. Memory: peak
RSS growth over the built model on CPU, torch.cuda.max_memory_allocated on CUDA. FLOPs: torch's counter on the
warm-up iteration (tools/benchmarks/flops.py). Timing (min and median of ``--iters`` iterations), load watching
and the markdown rows: tools/benchmarks/harness.py.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm and tools, not an installed one
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from tools.benchmarks import harness
from tools.benchmarks.harness import Column, fmt_percent, fmt_sig
from tools.benchmarks.roofline import add_profile_summary, add_roofline, profile_ops

DEFAULT_CONFIGS = [
    'configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py',
    'configs/distill/declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py',
    'configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py',
]
COLUMNS = [Column('config', 'config', is_key=True), Column('student @ size', 'student_text', is_key=True),
           Column('device', 'device', is_key=True), Column('batch', 'batch', is_key=True),
           Column('SD teacher', 'sd', lambda v: 'yes' if v else 'no', is_key=True),
           Column('teacher cache', 'cache', lambda v: 'on' if v else 'off', is_key=True),
           Column('s / iteration (min)', 's_per_iter', fmt_sig(3)),
           Column('s / iteration (median)', 's_per_iter_median', fmt_sig(3)),
           Column('GFLOP / iteration', 'gflop', fmt_sig(4)), Column('% of peak', 'peak_share', fmt_percent),
           Column('peak extra memory (MB)', 'peak_mb', lambda v: f'{v:.0f}')]


def measure(config, batch, iters, cache, with_sd, device, student_size=None, profile=False):
    import declip_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import set_random_seed

    from declip_mm.datasets import declip_distill_collate
    from declip_mm.datasets.sample_data import fetch_sample_data
    from declip_mm.registry import DATASETS, MODELS, OPTIMIZERS
    from tools.benchmarks.flops import counted_flops

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
    if student_size:
        ds_cfg['student_size'] = student_size     # the VFM view follows (student grid x VFM patch)
    dataset = DATASETS.build(ds_cfg)
    opt_cfg = dict(cfg.optim_wrapper.optimizer)
    optimizer = OPTIMIZERS.build(dict(opt_cfg, params=[p for p in model.parameters() if p.requires_grad]))
    counter = {'i': 0}

    def step():
        i = counter['i']
        counter['i'] += 1
        samples = [dataset[(i * batch + j) % len(dataset)] for j in range(batch)]
        data = model.data_preprocessor(declip_distill_collate(samples), training=True)
        losses = model.loss(data['inputs'])
        loss = sum(v for k, v in losses.items() if k.startswith('loss'))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    if cache:
        for _ in range(iters + 2):
            step()  # fill the cache for the batches measured below
        counter['i'] = 0
    base = harness.memory_start(device)
    flops, _ = counted_flops(step)                                             # warm-up, counted
    timing = harness.measure(step, iters, device, warmup=0)
    peak = harness.memory_peak(device, base)
    summary = profile_ops(step, device) if profile else None
    sd = model.teachers['sd'] is not None
    print(json.dumps(dict(config=os.path.basename(config), batch=batch, cache=cache, sd=sd,
                          s_per_iter=timing.min, s_per_iter_median=timing.median, times_s=timing.times,
                          state=timing.state.as_dict(), flops=flops, peak_mb=peak, student=model_cfg.student.model_name,
                          size=dataset.student_size, vfm_size=dataset.vfm_size, device=device, profile=summary)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=None, help='timed iterations (default: --repeats)')
    parser.add_argument('--cache', nargs='+', default=['off', 'on'], choices=['off', 'on'])
    parser.add_argument('--student-size', type=int, default=None, help="override the configs' student view size")
    parser.add_argument('--with-sd', action='store_true', help='include the diffusion teacher if its folder exists')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--profile', action='store_true', help='profile one more iteration of each (cache off) run')
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    iters = args.iters or args.repeats
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        config, batch, cache = args.child
        return measure(config, int(batch), iters, cache == '1', args.with_sd, args.device, args.student_size,
                       args.profile)
    bench = harness.Bench('distill', args, args.device, title='Distillation')
    peaks = bench.measure_peaks(['fp32'])
    for config in args.configs:
        for cache in args.cache:
            cmd = [sys.executable, __file__, '--iters', str(iters), '--device', args.device,
                   '--threads', str(torch.get_num_threads()),
                   '--child', config, str(args.batch), str(int(cache == 'on'))]
            cmd += (['--with-sd'] if args.with_sd else []) + (['--profile'] if args.profile and cache == 'off' else [])
            cmd += ['--student-size', str(args.student_size)] if args.student_size else []
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(
                os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            if proc.returncode != 0:
                print(f'{config} cache={cache}: failed\n{proc.stderr[-3000:]}', file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            state = bench.judge(harness.state_from_dict(row.pop('state')))
            timing = harness.Timing(row.pop('times_s'), state)
            flops, summary = row.pop('flops'), row.pop('profile')
            label = f"{row['student']} @ {row['size']}"
            row.update(device=bench.machine['device_name'], student_text=label, gflop=flops / 1e9,
                       peak_share=flops / timing.min / 1e9 / peaks['fp32'] if peaks.get('fp32') else None)
            bench.add(row, state)
            tiny = 'tiny' in row['config']
            add_roofline(bench, f"distillation iteration, cache {cache}",
                         f"{row['config']} ({'tiny' if tiny else 'paper'} model)",
                         f"student {row['size']}, VFM {row['vfm_size']}, batch {args.batch}", 'fp32', 'iteration',
                         timing, None, flops)
            if summary:
                add_profile_summary(bench, f'distillation iteration ({row["size"]} px)', row['config'], 'fp32', summary,
                                    state)
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    raise SystemExit(main())
