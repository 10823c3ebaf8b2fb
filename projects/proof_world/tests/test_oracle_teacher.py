"""The oracle context teacher: ground-truth segments as patch tokens, read from the distillation batch's label maps
(``DeCLIPDistillDataset(label_dir=...)``) by the distiller through the teacher's ``input_view``."""
import numpy as np
import pytest
import torch

import projects.proof_world.proof_world  # noqa: F401  (registers OracleSegmentTeacher)
from declip_mm.models.losses import ContextDistillLoss, cosine_matrix, student_affinity
from declip_mm.registry import MODELS
from projects.proof_world.proof_world.oracle_teacher import OracleSegmentTeacher


def test_tokens_are_per_patch_class_shares_without_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (2, 12, 8), generator=gen)
    labels[0, :4, :4] = 255                                     # a fully ignored patch (padding)
    labels[1, 5, 5] = 255
    tokens = OracleSegmentTeacher(num_classes=5, patch_size=4)(labels)
    assert tokens.shape == (2, 3 * 2, 5) and tokens.dtype == torch.float32
    for b in range(2):
        for i in range(3):
            for j in range(2):
                patch = labels[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4].flatten().tolist()
                want = [sum(v == c for v in patch) / 16 for c in range(5)]
                np.testing.assert_allclose(tokens[b, 2 * i + j].numpy(), want, atol=1e-6)
    assert tokens[0, 0].sum() == 0                              # ignored patch: no token, affinity 0


def test_affinity_is_one_within_a_segment_and_zero_across():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 7
    labels[:, 4:, :4] = 3
    s = cosine_matrix(OracleSegmentTeacher(num_classes=16, patch_size=4)(labels))[0]   # patches: 7 | 0/7 | 3/7
    assert torch.allclose(s, torch.tensor([[1., 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 1, 0, 1]]), atol=1e-6)


def test_bad_inputs():
    teacher = OracleSegmentTeacher(num_classes=4, patch_size=4)
    with pytest.raises(ValueError, match='integer label maps'):
        teacher(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match='not a multiple of the patch size 4'):
        teacher(torch.zeros(1, 10, 8, dtype=torch.long))
    with pytest.raises(ValueError, match='positive'):
        OracleSegmentTeacher(num_classes=0, patch_size=4)


def _distiller(**kwargs):
    return MODELS.build(dict(type='DeCLIPDistiller', student=dict(type='DeCLIPViT', model_name='DeCLIP-Tiny-ViT-16',
                                                                  mode='csa'),
                             vfm_teacher=dict(type='OracleSegmentTeacher', num_classes=6, patch_size=14),
                             content_loss=None, rcc_loss=None, **kwargs)).eval()


def test_the_distiller_reads_the_label_maps_for_an_oracle_teacher():
    """The context loss with the oracle equals the KL between the student's q / k affinity and the cosine matrix of
    the label histograms, computed here without the distiller; the image view is not what it reads."""
    torch.manual_seed(0)
    distiller = _distiller()
    labels = torch.randint(0, 6, (2, 56, 56))
    inputs = dict(student=torch.randn(2, 3, 64, 64), vfm=torch.randn(2, 3, 56, 56), vfm_labels=labels,
                  boxes=[torch.zeros(0, 4)] * 2, crops=torch.zeros(0, 3, 224, 224), keys=['a', 'b'],
                  skipped=torch.zeros(2))
    with torch.no_grad():
        loss = distiller.loss(inputs)['loss_context']
        context = distiller.student.forward_features(inputs['student'], out_indices=()).context
        target = cosine_matrix(OracleSegmentTeacher(num_classes=6, patch_size=14)(labels))
        want = ContextDistillLoss()(student_affinity(context), target)
        torch.testing.assert_close(loss, want)
        other = distiller.loss(dict(inputs, vfm=torch.randn(2, 3, 56, 56)))['loss_context']
        torch.testing.assert_close(other, loss)                       # the image view plays no part
    with pytest.raises(KeyError, match="reads the batch entry 'vfm_labels'.*label_dir"):
        distiller.loss({k: v for k, v in inputs.items() if k != 'vfm_labels'})


def test_an_oracle_cannot_use_the_image_keyed_teacher_cache(tmp_path):
    with pytest.raises(ValueError, match='teacher_cache keys targets by image content'):
        _distiller(teacher_cache=str(tmp_path))


def test_the_oracle_variant_config_carries_the_label_folder(tmp_path):
    from projects.proof_world.proof_world.ablation import VARIANT_BY_KEY, ProofInputs, distill_config
    from projects.proof_world.proof_world.teachers import prepare_teacher, teacher_inputs
    inputs = ProofInputs(world_root=tmp_path, model_name='DeCLIP-Proof-ViT-8', clip_checkpoint='clip.pt',
                         vfm_teacher=dict(type='VFMTeacher', arch='dinov2_vits14_reg', checkpoint=None,
                                          model_kwargs=dict(img_size=96, patch_size=8, embed_dim=48, depth=1,
                                                            num_heads=3)),
                         class_names=['grass', 'red striped circle'], thing_classes=['red striped circle'])
    oracle = teacher_inputs(inputs, prepare_teacher('oracle', tmp_path))
    cfg, _ = distill_config(VARIANT_BY_KEY['declip'], oracle, 0)
    assert cfg.model.vfm_teacher == dict(type='OracleSegmentTeacher', num_classes=16, patch_size=8, ignore_index=255)
    assert cfg.train_dataloader.dataset.label_dir == 'train/labels' and cfg.train_dataloader.dataset.vfm_patch == 8
    plain, _ = distill_config(VARIANT_BY_KEY['declip'], inputs, 0)
    assert plain.model.vfm_teacher.type == 'VFMTeacher' and 'label_dir' not in plain.train_dataloader.dataset
    with pytest.raises(ValueError, match='needs the world diffusion teacher'):
        distill_config(VARIANT_BY_KEY['declip_sd'], inputs, 0)
