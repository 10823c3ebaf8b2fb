# COCO-Object val2017, background + 80 things; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_dataloader = dict(
    dataset=dict(
        type='COCOObjectDataset',
        data_root='data/coco_stuff164k',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations_object/val2017'),
    ))
val_dataloader = test_dataloader
