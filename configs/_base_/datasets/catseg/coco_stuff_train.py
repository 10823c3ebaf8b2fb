# CAT-Seg's training data: COCO-Stuff 164k train (171 classes, ignore 255) in the d2 layout CAT-Seg's
# datasets/prepare_coco_stuff.py writes (data/coco-stuff/annotations_detectron2/train2017). Augmentation (CAT-Seg
# configs): shortest edge 384 (max 1333), random 384 crop, colour jitter (ColorAugSSD ~ PhotoMetricDistortion), flip.
data_root = 'data/coco-stuff/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='declip_mm.LoadFullRangeAnnotations'),   # mmseg's LoadAnnotations without the uint8 cast
    dict(type='RandomChoiceResize', scales=[(1333, 384)], keep_ratio=True),
    dict(type='RandomCrop', crop_size=(384, 384), cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# batch: detectron2's IMS_PER_BATCH 4 is the TOTAL over GPUs (DeCLIP_CATSeg eva_vit*.yaml @06262d4: 4 GPUs x 1), so
# 1 per process, launched on 4 processes (tools/dist_train.sh CONFIG 4); on one GPU: train_dataloader.batch_size=4.
train_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='LabelFolderSegDataset', data_root=data_root, vocabulary='coco',
                 data_prefix=dict(img_path='images/train2017', seg_map_path='annotations_detectron2/train2017'),
                 img_suffix='.jpg', seg_map_suffix='.png', pipeline=train_pipeline))
