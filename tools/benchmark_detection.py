"""Speed and peak memory of F-ViT (configs/detection) with random weights: test ms per image and one training
iteration (forward, backward, AdamW) at the config's resolution.

    python tools/benchmark_detection.py [--config configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py]
        [--batch 2] [--repeats 3] [--device cpu|cuda] [--markdown docs/benchmarks.md]

The architecture, not the values, sets the cost: the backbone has random weights and the class embeddings are
random unit vectors. On a CPU, SyncBN becomes BN (SyncBN needs a process group and CUDA) and training runs in
fp32 (AmpOptimWrapper needs a GPU); on CUDA the config's fp16 AMP is used. Memory: peak extra memory over the
loaded model (CUDA: max_memory_allocated; CPU: the process's peak RSS, reset before each measurement).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict

from tools.benchmark_backbone import proc_status_mb, reset_cpu_peak


def replace_syncbn(cfg):
    if isinstance(cfg, dict):
        return {k: (dict(v, type='BN') if isinstance(v, dict) and v.get('type') == 'SyncBN' else replace_syncbn(v))
                for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [replace_syncbn(v) for v in cfg]
    return cfg


def build(config: str, device: str, embeddings_dir: str):
    import declip_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from declip_mm.datasets.ov_detection import class_names_from
    from declip_mm.models.text.embedding_file import save_class_embeddings
    cfg = Config.fromfile(config)
    head = cfg.model.roi_head.bbox_head
    names = class_names_from(head.cls_predictor_cfg.class_names)
    path = f'{embeddings_dir}/random.pt'
    save_class_embeddings(path, names + ['background'], torch.randn(len(names) + 1, head.fc_out_channels))
    head.cls_predictor_cfg.embeddings = path
    if isinstance(head.loss_cls.class_weight, str):
        head.loss_cls = dict(type='OVCrossEntropyLoss', class_weight=[1.0] * len(names) + [0.9])
    cfg.model.backbone.pretrained = None
    model_cfg = cfg.model if device == 'cuda' else ConfigDict(replace_syncbn(cfg.model.to_dict()))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return cfg, MODELS.build(model_cfg).to(device)


def fake_batch(size: int, batch: int, base_classes, device: str):
    """Random images with 8 random boxes each, labelled with base classes (training sees no novel one)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    base = torch.tensor(base_classes)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g))
        xy = torch.rand(8, 2, generator=g) * size * 0.6
        wh = 16 + torch.rand(8, 2, generator=g) * size * 0.3
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0),
                                             pad_shape=(size, size), batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=base[torch.randint(0, len(base), (8,), generator=g)])
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def cpu_name() -> str:
    """The CPU model and its bf16 support (benchmarks.md names the CPU of every row)."""
    text = Path('/proc/cpuinfo').read_text() if Path('/proc/cpuinfo').is_file() else ''
    model = next((ln.split(':', 1)[1].strip() for ln in text.splitlines() if ln.startswith('model name')),
                 platform.processor() or platform.machine())
    flags = 'avx512_bf16' if 'avx512_bf16' in text else 'amx' if 'amx_bf16' in text else 'avx2' if 'avx2' in text else ''
    return f'{model} ({flags})' if flags else model


def best_of(fn, repeats: int, device: str):
    """(fastest wall time in s over ``repeats`` calls of ``fn``, peak extra memory in MB during them)."""
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    base, times = start(device), []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times), peak_mb(device, base)


def peak_mb(device, base):
    if device == 'cuda':
        return torch.cuda.max_memory_allocated() / 2 ** 20 - base
    return proc_status_mb('VmHWM') - base


def start(device):
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2 ** 20
    return reset_cpu_peak()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py')
    parser.add_argument('--batch', type=int, default=2, help='images per training iteration')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--markdown', default=None, help='append the table rows to this file')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model = build(args.config, args.device, tmp)
    size = cfg.model.data_preprocessor.pad_size_divisor
    weights = model.roi_head.bbox_head.loss_cls.class_weight[:-1]
    base_classes = [c for c, w in enumerate(weights) if w > 0]
    amp = args.device == 'cuda'

    model.eval()
    data = model.data_preprocessor(fake_batch(size, 1, base_classes, args.device), False)
    with torch.no_grad(), torch.autocast(args.device, enabled=amp, dtype=torch.float16):
        model.predict(data['inputs'], data['data_samples'])                        # warm-up
        test_s, test_mb = best_of(lambda: model.predict(data['inputs'], data['data_samples']), args.repeats,
                                  args.device)
    test_ms = 1000 * test_s

    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
    scaler = torch.amp.GradScaler(enabled=amp)
    batch = fake_batch(size, args.batch, base_classes, args.device)

    def step():
        data = model.data_preprocessor(batch, True)
        with torch.autocast(args.device, enabled=amp, dtype=torch.float16):
            losses = model.loss(data['inputs'], data['data_samples'])
        loss = sum(v.sum() if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
        optim.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    step()
    train_s, train_mb = best_of(step, args.repeats, args.device)
    device = torch.cuda.get_device_name() if args.device == 'cuda' else cpu_name()
    row = dict(config=_Path(args.config).name, device=device, size=size, test_ms_per_image=round(test_ms, 1),
               test_peak_mb=round(test_mb), train_batch=args.batch, train_s_per_iter=round(train_s, 2),
               train_peak_mb=round(train_mb), precision='fp16 AMP' if amp else 'fp32')
    print(json.dumps(row))
    if args.markdown:
        with open(args.markdown, 'a') as f:
            f.write(f"| {row['config']} | {device} | {size} | {row['precision']} | {row['test_ms_per_image']} | "
                    f"{row['test_peak_mb']} | {args.batch} | {row['train_s_per_iter']} | {row['train_peak_mb']} |\n")


if __name__ == '__main__':
    main()
