"""The DINO-style proof teacher (proof_world/dino_pretrain.py): export, EMA teacher, cache, arguments, grouping."""
import pytest
import torch

from projects.proof_world.proof_world import dino_pretrain
from projects.proof_world.proof_world.data import load_split
from projects.proof_world.proof_world.dino_pretrain import SelfDistillation, pretrain_dino, train_self_distillation
from projects.proof_world.proof_world.world import write_world

TINY = dict(steps=2, batch_size=2, local_crops=2, warmup=1, progress=False, probe_scenes=(4, 3),
            selection_scenes=(3, 6))


@pytest.fixture(scope='module')
def tiny_world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp('world'), n_train=8, n_val=6, size=64, seed=1)


@pytest.fixture(scope='module')
def trained(tiny_world, tmp_path_factory):
    cache = tmp_path_factory.mktemp('cache')
    path, cfg = pretrain_dino(tiny_world, cache_dir=str(cache), **TINY)
    return path, cfg, cache


def test_weights_load_through_vfm_teacher(trained):
    from declip_mm.models.teachers.vfm import VFMTeacher
    from projects.proof_world.proof_world.cache import read_report
    path, cfg, _ = trained
    assert cfg['type'] == 'VFMTeacher' and cfg['checkpoint'] == str(path)
    teacher = VFMTeacher(**{k: v for k, v in cfg.items() if k != 'type'})
    assert teacher.load_report.missing == [] and teacher.load_report.unexpected == []
    tokens = teacher(torch.randn(2, 3, 96, 96))
    assert tokens.shape == (2, 12 * 12, cfg['model_kwargs']['embed_dim'])
    report = read_report(path)
    assert len(report['losses']) == TINY['steps'] and report['saved'] == 'ema_teacher'
    for probe in ('knn_probe', 'selection_probe'):
        assert set(report[probe]) == {'trained', 'random_init'}
        assert 0 <= report[probe]['trained']['within_image_thing_precision'] <= 1
    assert report['selection_probe']['trained']['val_scenes'] == [3, 6]


def test_cache_hit_returns_the_file_without_training(trained, tiny_world, monkeypatch):
    path, cfg, cache = trained
    stamp = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError('the cache should have answered')
    monkeypatch.setattr(dino_pretrain, 'train_self_distillation', no_training)
    again, cfg_again = pretrain_dino(tiny_world, cache_dir=str(cache), **TINY)
    assert again == path and cfg_again == cfg and path.stat().st_mtime_ns == stamp


def test_ema_teacher_and_momentum_update(tiny_world):
    images = load_split(tiny_world, 'train').images
    model, history = train_self_distillation(images, steps=3, batch_size=2, local_crops=1, warmup=1, seed=0)
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h['loss'])) for h in history)
    student = dict(model.student.named_parameters())
    differs = [n for n, p in model.teacher.named_parameters() if not torch.equal(p, student[n])]
    assert len(differs) > 0.5 * len(student)        # the EMA teacher lags the student
    # one update against teacher <- m * teacher + (1 - m) * student, computed here independently
    m = 0.9
    pairs = [(s, t) for s_mod, t_mod in zip(model.student_modules(), model.teacher_modules())
             for s, t in zip(s_mod.parameters(), t_mod.parameters())]
    expected = [m * t.detach().clone() + (1 - m) * s.detach().clone() for s, t in pairs]
    model.update_teacher(m)
    for (s, t), e in zip(pairs, expected):
        torch.testing.assert_close(t, e)
    state = model.teacher_state_dict()
    assert {'register_tokens', 'mask_token', 'pos_embed', 'cls_token'} <= set(state)
    assert state['pos_embed'].shape[1] == 1 + 12 * 12 and not state['pos_embed'][0, 0].any()


def test_bad_arguments_raise(tiny_world, tmp_path):
    images = load_split(tiny_world, 'train').images
    with pytest.raises(ValueError, match='patch_loss'):
        pretrain_dino(tiny_world, cache_dir=str(tmp_path), patch_loss='mae')
    with pytest.raises(ValueError, match='registers'):
        pretrain_dino(tiny_world, cache_dir=str(tmp_path), arch='dinov2_vits14')
    with pytest.raises(ValueError, match='steps'):
        pretrain_dino(tiny_world, cache_dir=str(tmp_path), steps=0)
    with pytest.raises(ValueError, match='uint8'):
        train_self_distillation(images.float(), steps=1)
    with pytest.raises(ValueError, match='mask_ratio'):
        train_self_distillation(images, steps=1, mask_ratio=(0.6, 0.2))
    with pytest.raises(ValueError, match='momentum'):
        train_self_distillation(images, steps=1, momentum=1.5)
    features_of, grid = dino_pretrain.teacher_features(None, dino_pretrain.VFM_ARCH, dino_pretrain.VFM_MODEL_KWARGS, 0)
    with pytest.raises(ValueError, match='no val scenes'):
        dino_pretrain.within_image_probe(features_of, tiny_world, grid, (6, 10))
    assert not any(tmp_path.iterdir())               # nothing cached by a refused call


def test_student_and_teacher_start_equal():
    model = SelfDistillation()
    for s_mod, t_mod in zip(model.student_modules(), model.teacher_modules()):
        for s, t in zip(s_mod.state_dict().values(), t_mod.state_dict().values()):
            assert torch.equal(s, t)
        assert not any(p.requires_grad for p in t_mod.parameters())


@pytest.mark.slow
def test_training_improves_within_image_grouping(tmp_path):
    """60 steps on 96 scenes: the EMA teacher's within-image thing precision beats the same ViT at random init.
    Measured over seeds 0, 1, 2 (busy 2-core machine): trained 0.510 / 0.506 / 0.483 against random 0.446 / 0.428 /
    0.430, margins 0.053 - 0.078; the test asks for 0.03. (With momentum 0.99 the teacher lags too far behind in 60
    steps: margins 0.004 - 0.009.)"""
    root = write_world(tmp_path / 'world', n_train=96, n_val=24, size=128, seed=5, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # small tensors: two threads lose far more than they gain on busy cores
    try:
        model, _ = train_self_distillation(load_split(root, 'train').images, steps=60, batch_size=16,
                                           local_crops=2, warmup=10, lr=2e-3, momentum=0.9, seed=0)
    finally:
        torch.set_num_threads(threads)
    torch.save(model.teacher_state_dict(), tmp_path / 'teacher.pt')
    precision = {}
    for name, checkpoint in (('trained', tmp_path / 'teacher.pt'), ('random_init', None)):
        features_of, grid = dino_pretrain.teacher_features(checkpoint, dino_pretrain.VFM_ARCH,
                                                           dino_pretrain.VFM_MODEL_KWARGS, seed=0)
        precision[name] = dino_pretrain.within_image_probe(features_of, root, grid, (0, 24))[
            'within_image_thing_precision']
    assert precision['trained'] > precision['random_init'] + 0.03, precision
