# CAT-Seg with a DeCLIP EVA02-B/16, trained on COCO-Stuff 171 at 384 px for 80k iterations (DeCLIP_CATSeg's
# eva_vitb_384.yaml). The released, retrained checkpoint scores A-847 15.20, PC-459 21.47, A-150 36.57, PC-59 60.89,
# PAS-20 96.68, PAS-20b 81.54 according to the DeCLIP_CATSeg README @06262d4; these are not the paper's numbers
# (docs/catseg.md, "Where the numbers come from").
#   bash tools/dist_train.sh configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py 4
#   python tools/test.py configs/catseg/catseg_declip-eva02-b16_test-ade150.py work_dirs/.../iter_80000.pth
_base_ = [
    '../_base_/models/catseg_eva02_b16.py',
    '../_base_/datasets/catseg/coco_stuff_train.py',
    '../_base_/datasets/catseg/test_benchmarks.py',
    '../_base_/schedules/catseg_80k.py',
    '../_base_/mmseg_runtime.py',
]
val_dataloader = None
val_cfg = None
val_evaluator = None
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000),
                     param_scheduler=dict(type='ParamSchedulerHook'))
