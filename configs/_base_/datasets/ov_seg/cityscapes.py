# Cityscapes val, 19 classes, short side 560; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4096, 560), keep_ratio=True),
    dict(type='declip_mm.LoadFullRangeAnnotations'),   # mmseg's LoadAnnotations without the uint8 cast
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='CityscapesDataset',
        data_root='data/cityscapes',
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline,
    ))
val_dataloader = test_dataloader
