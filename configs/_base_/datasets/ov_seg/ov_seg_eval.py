# Shared by the 8 training-free benchmarks (METHOD.md section 5): validation images resized to short side 448
# (Cityscapes overrides it with 560), labels loaded with the dataset's reduce_zero_label, mmseg IoUMetric.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(10000, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
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
