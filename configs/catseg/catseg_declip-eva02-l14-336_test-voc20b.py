# CAT-Seg + DeCLIP EVA02-L/14-336 on voc20b: CAT-Seg's protocol (640 x 640, four 384 windows + the global view, CLIP at
# 336, pooling 1 x 1, detectron2 mIoU). python tools/test.py configs/catseg/catseg_declip-eva02-l14-336_test-voc20b.py CHECKPOINT
_base_ = ['./catseg_declip-eva02-l14-336_coco-stuff-336_80k.py']
model = dict(test_class_names={{_base_.test_vocabularies.voc20b}})
test_dataloader = dict(dataset={{_base_.benchmarks.voc20b}})
test_evaluator = {{_base_.evaluators.voc20b}}
