# PASCAL VOC 2012 val, the 20 object classes (background ignored); prepare it as in docs/evaluation.md.
_base_ = ['./ov_seg_eval.py']
test_dataloader = dict(
    dataset=dict(
        type='PascalVOCDataset',
        data_root='data/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        # the 20 object classes: background pixels become 255 (ignored)
        metainfo=dict(classes=('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
                               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
                               'train', 'tvmonitor')),
    ))
val_dataloader = test_dataloader
