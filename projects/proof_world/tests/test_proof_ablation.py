"""The proof ablation reduced: a small world, a briefly pretrained CLIP and VFM (projects/proof_world/proof_world/pretrain.py),
DeCLIP + RCC distilled through projects/proof_world/configs/ and mmengine's Runner, evaluated on held-out scenes."""
import numpy as np
import pytest
import torch

from projects.proof_world.proof_world.ablation import VARIANT_BY_KEY, distill, distill_config, evaluate, prepare_inputs

ITERS = 40
# a real weight on the region-correlation term (0.05 in the configs), or its gradient drowns in 40 iterations
OVERRIDES = {'train_cfg.max_iters': ITERS, 'param_scheduler.0.warmup_iters': 3, 'model.rcc_loss.loss_weight': 2.0}


@pytest.fixture(scope='module')
def proof(tmp_path_factory):
    cache = tmp_path_factory.mktemp('proof')
    inputs = prepare_inputs(world_root=cache / 'world', n_train=160, n_val=24, size=96, cache_dir=str(cache),
                            clip_kwargs=dict(steps=80, batch_size=32, warmup=10, zero_shot_scenes=None),
                            vfm_kwargs=dict(steps=30, batch_size=16, warmup=5, probe_scenes=None), progress=False)
    run = distill(VARIANT_BY_KEY['declip_rcc'], inputs, 0, cache,
                  overrides=OVERRIDES, progress=False)
    return inputs, run, cache


def test_variant_configs_differ_only_where_the_ablation_says(tmp_path):
    from projects.proof_world.proof_world.ablation import ProofInputs
    inputs = ProofInputs(world_root=tmp_path, model_name='DeCLIP-Proof-ViT-8', clip_checkpoint='clip.pt',
                         vfm_teacher=dict(type='VFMTeacher', arch='dinov2_vits14_reg', checkpoint=None,
                                          model_kwargs=dict(img_size=96, patch_size=8, embed_dim=48, depth=1,
                                                            num_heads=3)),
                         class_names=['grass', 'red striped circle'], thing_classes=['red striped circle'])
    models = {k: distill_config(VARIANT_BY_KEY[k], inputs, 0)[0].model for k in
              ('content_only', 'joint', 'context_only', 'declip', 'declip_rcc')}
    assert models['content_only'].context_loss is None and models['content_only'].content_loss is not None
    assert models['context_only'].content_loss is None and models['context_only'].context_loss is not None
    assert models['joint'].context_features == 'dense' and models['declip'].context_features == 'context'
    assert models['declip'].rcc_loss is None and models['declip_rcc'].rcc_loss.loss_weight == 0.05
    for m in models.values():
        assert m.student.mode == 'csa' and m.student.pretrained == 'clip.pt' and m.vfm_teacher.model_kwargs.depth == 1


def test_context_loss_on_dense_features_is_the_affinity_of_the_dense_map():
    """context_features='dense' (joint, no decoupling): the loss equals the KL between the VFM's and the dense
    map's cosine matrices, computed here without the distiller."""
    from declip_mm.models.losses import ContextDistillLoss, cosine_matrix
    from declip_mm.registry import MODELS
    torch.manual_seed(0)
    vfm = dict(type='VFMTeacher', arch='dinov2_vits14_reg', model_kwargs=dict(embed_dim=48, depth=1, num_heads=3))
    distiller = MODELS.build(dict(type='DeCLIPDistiller', student=dict(type='DeCLIPViT', model_name='DeCLIP-Tiny-ViT-16'),
                                  vfm_teacher=vfm, content_loss=None, rcc_loss=None, context_features='dense')).eval()
    student = torch.randn(2, 3, 64, 64)
    inputs = dict(student=student, vfm=torch.randn(2, 3, 56, 56), boxes=[torch.zeros(0, 4)] * 2,
                  crops=torch.zeros(0, 3, 224, 224), keys=['a', 'b'], skipped=torch.zeros(2))
    with torch.no_grad():
        losses = distiller.loss(inputs)
        dense = distiller.student.extract_dense(student, normalize=False).flatten(2).transpose(1, 2)
        want = ContextDistillLoss()(cosine_matrix(dense), cosine_matrix(distiller.teachers['vfm'](inputs['vfm'])))
    assert set(losses) == {'loss_context', 'data_skipped'}
    torch.testing.assert_close(losses['loss_context'], want)


@pytest.mark.slow
def test_distillation_lowers_every_loss(proof):
    _, run, _ = proof
    assert set(run.losses) == {'loss', 'loss_content', 'loss_context', 'loss_rcc'}
    for term, values in run.losses.items():
        assert len(values) == ITERS, term
        first, last = np.mean(values[:10]), np.mean(values[-10:])
        assert last < 0.97 * first, (term, first, last)


@pytest.mark.slow
def test_declip_dense_features_beat_the_untrained_ones_on_held_out_scenes(proof):
    """The margin (1 mIoU) is below the spread over seeds: distillation seeds 0, 1, 2 of this reduced pipeline gave
    16.9, 16.5, 16.6 mIoU against 11.8 untrained (gaps 4.7-5.1), measured 2026-12-06."""
    inputs, run, _ = proof
    untrained = evaluate(inputs, None, 'csa')
    distilled = evaluate(inputs, run.backbone, 'csa')
    assert untrained['num_images'] == distilled['num_images'] == 24
    assert distilled['mIoU'] > untrained['mIoU'] + 1.0, (untrained['mIoU'], distilled['mIoU'])


@pytest.mark.slow
def test_a_second_run_is_read_from_the_cache(proof):
    inputs, run, cache = proof
    again = distill(VARIANT_BY_KEY['declip_rcc'], inputs, 0, cache,
                    overrides=OVERRIDES, progress=False)
    assert again.cached and again.backbone == run.backbone and again.losses == run.losses
