# PASCAL Context val, 60 classes with background; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_dataloader = dict(
    dataset=dict(
        type='PascalContextDataset',
        data_root='data/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
    ))
val_dataloader = test_dataloader
