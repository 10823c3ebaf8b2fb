# CAT-Seg + DeCLIP EVA02-L/14-336 on ade150: CAT-Seg's protocol (640 x 640, four 384 windows + the global view, CLIP at
# 336, pooling 1 x 1, detectron2 mIoU). python tools/test.py configs/catseg/catseg_declip-eva02-l14-336_test-ade150.py CHECKPOINT
_base_ = ['./catseg_declip-eva02-l14-336_coco-stuff-336_80k.py']
model = dict(test_class_names={{_base_.test_vocabularies.ade150}})
test_dataloader = dict(dataset={{_base_.benchmarks.ade150}})
test_evaluator = {{_base_.evaluators.ade150}}
