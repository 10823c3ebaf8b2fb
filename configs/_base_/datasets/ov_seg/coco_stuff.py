# COCO-Stuff 164k val2017, 171 classes; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_dataloader = dict(
    dataset=dict(
        type='COCOStuffDataset',
        data_root='data/coco_stuff164k',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    ))
val_dataloader = test_dataloader
