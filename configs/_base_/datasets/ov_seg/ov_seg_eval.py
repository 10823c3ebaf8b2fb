# Shared by the 8 training-free benchmarks (docs/evaluation.md): validation images resized to short side 448
# with mmseg Resize scale=(4096, 448), keep_ratio, as the authors' configs/cfg_*.py (DeCLIP zero-shot branch
# @3b65d49); Cityscapes overrides it with (4096, 560), COCO-Object with (2048, 448). Labels stay at the original
# size (loaded after the resize); predictions are resized back to it. mmseg IoUMetric.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4096, 448), keep_ratio=True),
    dict(type='declip_mm.LoadFullRangeAnnotations'),   # mmseg's LoadAnnotations without the uint8 cast
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
val_evaluator = test_evaluator
