# ADE20K val, 150 classes; prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_dataloader = dict(
    dataset=dict(
        type='ADE20KDataset',
        data_root='data/ade/ADEChallengeData2016',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        reduce_zero_label=True,
    ))
val_dataloader = test_dataloader
