# CAT-Seg with a DeCLIP EVA02-L/14-336 (DeCLIP_CATSeg's eva_vitl_336.yaml): CLIP at 336 px (24 x 24 tokens), guidance from
# blocks 7 and 15, 768-d joint space; the rest as the B/16 config. Test configs: catseg_declip-eva02-l14-336_test-*.py
# (python tools/eval_benchmarks.py --suite catseg-l14 CHECKPOINT runs all six).
_base_ = ['./catseg_declip-eva02-b16_coco-stuff-384_80k.py']
model = dict(
    backbone=dict(model_name='EVA02-L-14-336', pretrained='checkpoints/declip_eva02_l14_336.pth', out_indices=(7, 15),
                  input_size=336),
    text_model='EVA02-L-14-336', text_pretrained='merged2b_s6b_b61k', clip_resolution=336,
    aggregator=dict(text_dim=768, appearance_dim=768))
