# Training-free open-vocabulary segmentation with a DeCLIP EVA02-B/16 (METHOD.md section 5). The DeCLIP
# weights are given on the command line: tools/test.py CONFIG declip_backbone.pth (mode and attention scale
# come from the checkpoint). Without it the backbone is the original EVA02-CLIP ('csa' = an SCLIP-style baseline;
# set model.backbone.mode='vanilla' / 'maskclip' for the CLIP / MaskCLIP baselines).
model = dict(
    type='TrainingFreeSegmentor',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k', mode=None,
                  attn_scale=None, trainable='none'),
    text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k',
                      templates='imagenet80', synonym_reduce='max'),
    class_names='voc21',
    logit_scale=40.0,
    bg_thresh=0.0,
    test_cfg=dict(mode='slide', crop_size=(336, 336), stride=(112, 112)))
