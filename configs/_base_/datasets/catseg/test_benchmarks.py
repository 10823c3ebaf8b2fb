# CAT-Seg's six test benchmarks (docs/catseg.md), in the d2 layouts CAT-Seg's datasets/prepare_*.py write (run
# them once; docs/catseg.md): the image's shorter side resized to 640 (max 2560, as the test mapper), the label at its
# original size; detectron2's mIoU (D2IoUMetric). Each leaf config picks one with its vocabulary, e.g.
#   test_dataloader = dict(dataset=benchmarks['ade150']); test_evaluator = evaluators['ade150']
# detectron2's test resize (ResizeShortestEdge -> PIL bilinear, antialiased when shrinking); 'cv2' resizes as mmseg's
# Resize does (same size). Per run: --cfg-options test_dataloader.dataset.pipeline.1.backend=cv2 (docs/catseg.md)
test_resize_backend = 'pillow'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='declip_mm.D2ResizeShortestEdge', short_edge=640, max_size=2560, backend=test_resize_backend),
    dict(type='declip_mm.LoadFullRangeAnnotations'),   # labels at their full range (16-bit A-847 / PC-459)
    dict(type='PackSegInputs'),
]
benchmarks = dict(
    ade847=dict(data_root='data/ADE20K_2021_17_01', vocabulary='ade847', seg_map_suffix='.tif', ignore_index=65535,
                data_prefix=dict(img_path='images_detectron2/validation', seg_map_path='annotations_detectron2/validation')),
    pc459=dict(data_root='data/VOCdevkit/VOC2010', vocabulary='pc459', seg_map_suffix='.tif', ignore_index=459,
               data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val')),
    ade150=dict(data_root='data/ADEChallengeData2016', vocabulary='ade150',
                data_prefix=dict(img_path='images/validation', seg_map_path='annotations_detectron2/validation')),
    pc59=dict(data_root='data/VOCdevkit/VOC2010', vocabulary='pc59',
              data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc59_val')),
    voc20=dict(data_root='data/VOCdevkit/VOC2012', vocabulary='voc20',
               data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/val')),
    # PAS-20b: the model scores voc20b's 59 names; the evaluation has 21 classes (20 VOC + background = 20)
    voc20b=dict(data_root='data/VOCdevkit/VOC2012', vocabulary='voc20',
                metainfo=dict(), data_prefix=dict(img_path='JPEGImages', seg_map_path='annotations_detectron2_bg/val')),
)
for _name, _cfg in benchmarks.items():
    _cfg.update(type='LabelFolderSegDataset', img_suffix='.jpg', seg_map_suffix=_cfg.get('seg_map_suffix', '.png'),
                pipeline=test_pipeline, test_mode=True)
benchmarks['voc20b']['vocabulary'] = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
                                      'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
                                      'sheep', 'sofa', 'train', 'tvmonitor', 'background']
evaluators = dict(
    ade847=dict(type='D2IoUMetric', ignore_index=65535),
    pc459=dict(type='D2IoUMetric', ignore_index=459),
    ade150=dict(type='D2IoUMetric', ignore_index=255),
    pc59=dict(type='D2IoUMetric', ignore_index=255),
    voc20=dict(type='D2IoUMetric', ignore_index=255),
    voc20b=dict(type='D2IoUMetric', ignore_index=255, background_from=20),
)
test_vocabularies = dict(ade847='ade847', pc459='pc459', ade150='ade150', pc59='pc59', voc20='voc20', voc20b='voc20b')
test_dataloader = dict(batch_size=1, num_workers=4, persistent_workers=False,
                       sampler=dict(type='DefaultSampler', shuffle=False), dataset=benchmarks['ade150'])
test_evaluator = evaluators['ade150']
