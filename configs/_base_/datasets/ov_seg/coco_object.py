# COCO-Object val2017, background + 80 things; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),   # the authors' cfg_coco_object.py
    dict(type='declip_mm.LoadFullRangeAnnotations'),   # mmseg's LoadAnnotations without the uint8 cast
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    dataset=dict(
        type='COCOObjectDataset',
        data_root='data/coco_stuff164k',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations_object/val2017'),
        pipeline=test_pipeline,
    ))
val_dataloader = test_dataloader
