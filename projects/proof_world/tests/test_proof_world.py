"""The proof world: scenes, the written world, its mmseg dataset, the tiny CLIP, the label-free teacher."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from projects.proof_world.proof_world import world
from projects.proof_world.proof_world.world import CLASS_NAMES, NUM_STUFF, SPLIT_COUNTS, STUFF_CLASSES, THING_CLASSES, render_scene


def names_in_caption(caption):
    """Class names the caption mentions (whole words), found independently of the caption builder."""
    return {i for i, name in enumerate(CLASS_NAMES) if re.search(rf'\b{re.escape(name)}\b', caption)}


@pytest.fixture(scope='module')
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp('world')
    return world.write_world(root, n_train=6, n_val=4, size=64, seed=3)


def test_classes_need_two_attributes():
    assert len(THING_CLASSES) >= 12 and CLASS_NAMES == STUFF_CLASSES + THING_CLASSES
    words = [name.split() for name in THING_CLASSES]
    for position in range(3):   # colour, texture, shape: every value is shared by several classes
        values = [w[position] for w in words]
        assert min(values.count(v) for v in values) >= 2
    assert len({tuple(w) for w in words}) == len(words)
    for a, b in [(0, 2), (1, 2)]:   # the shape with the colour or with the texture names the class
        assert len({(w[a], w[b]) for w in words}) == len(words)
    assert len({(w[0], w[1]) for w in words}) < len(words)   # colour and texture alone do not


def test_scene_is_deterministic_and_split_dependent():
    a, b = render_scene(5, 'train', 64), render_scene(5, 'train', 64)
    for key in ('image', 'label', 'boxes', 'box_labels'):
        np.testing.assert_array_equal(a[key], b[key])
    assert a['caption'] == b['caption']
    assert not np.array_equal(a['image'], render_scene(6, 'train', 64)['image'])
    assert not np.array_equal(a['image'], render_scene(5, 'val', 64)['image'])
    assert a['image'].shape == (64, 64, 3) and a['image'].dtype == np.uint8
    assert a['label'].shape == (64, 64) and a['label'].dtype == np.uint8
    with pytest.raises(ValueError, match='split'):
        render_scene(0, 'test')


@pytest.mark.parametrize('split', ['train', 'val'])
def test_labels_boxes_and_captions_agree_with_the_masks(split):
    for seed in range(12):
        s = render_scene(seed, split, 96)
        label = s['label']
        present = set(np.unique(label).tolist())
        assert present <= set(range(len(CLASS_NAMES)))
        things = {c for c in present if c >= NUM_STUFF}
        assert set(s['box_labels'].tolist()) == things and len(s['box_labels']) == len(things)
        for box, cls in zip(s['boxes'], s['box_labels']):
            ys, xs = np.nonzero(label == cls)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert names_in_caption(s['caption']) == present, s['caption']


def test_held_out_scenes_follow_the_stated_rule():
    for split in ('train', 'val'):
        things = [len(render_scene(i, split, 64)['box_labels']) for i in range(30)]
        stuff = [int((np.unique(render_scene(i, split, 64)['label']) < NUM_STUFF).sum()) for i in range(30)]
        lo, hi = SPLIT_COUNTS[split]['things']
        assert lo <= min(things) and max(things) <= hi
        lo, hi = SPLIT_COUNTS[split]['regions']
        assert lo <= min(stuff) and max(stuff) <= hi
    # val scenes always have more regions than train's minimum and at least 2 things: crowded layouts
    assert SPLIT_COUNTS['val']['things'][0] > SPLIT_COUNTS['train']['things'][0]
    assert SPLIT_COUNTS['val']['regions'][0] > SPLIT_COUNTS['train']['regions'][0]


def test_written_world_matches_the_scenes_and_is_idempotent(tiny_world, tmp_path):
    for split, count in (('train', 6), ('val', 4)):
        ann = json.loads((tiny_world / split / 'annotations.json').read_text())
        assert ann['classes'] == CLASS_NAMES and len(ann['images']) == count
        for rec in ann['images'][:2]:
            s = render_scene(rec['scene_seed'], split, 64)
            np.testing.assert_array_equal(np.asarray(Image.open(tiny_world / split / rec['file_name'])), s['image'])
            np.testing.assert_array_equal(np.asarray(Image.open(tiny_world / split / rec['label_file'])), s['label'])
            assert rec['caption'] == s['caption'] and rec['box_labels'] == s['box_labels'].tolist()
    image = tiny_world / 'train' / 'images' / '00000.png'
    mtime = image.stat().st_mtime_ns
    assert world.write_world(tiny_world, n_train=6, n_val=4, size=64, seed=3) == tiny_world
    assert image.stat().st_mtime_ns == mtime      # nothing rewritten
    with pytest.raises(FileExistsError, match='n_train'):
        world.write_world(tiny_world, n_train=7, n_val=4, size=64, seed=3)
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not a proof world'):
        world.write_world(other, n_train=2, n_val=2, size=64)
    rewritten = world.write_world(tmp_path / 'w', n_train=2, n_val=1, size=64)
    world.write_world(rewritten, n_train=3, n_val=1, size=64, overwrite=True)
    assert len(list((rewritten / 'train' / 'images').glob('*.png'))) == 3


def test_dataset_yields_what_mmseg_expects(tiny_world):
    from mmengine.registry import init_default_scope
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')            # as an mmseg config builds it: bare type name, mmseg transforms
    dataset = DATASETS.build(dict(
        type='ProofWorldDataset', data_root=str(tiny_world), split='val',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
    assert len(dataset) == 4 and dataset.metainfo['classes'] == tuple(CLASS_NAMES)
    assert len(dataset.metainfo['palette']) == len(CLASS_NAMES)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        item = dataset[i]
        label = np.asarray(Image.open(tiny_world / 'val' / 'labels' / f'{i:05d}.png'))
        assert item['inputs'].shape == (3, 64, 64) and item['inputs'].dtype == torch.uint8
        sample = item['data_samples']
        np.testing.assert_array_equal(sample.gt_sem_seg.data[0].numpy(), label)
        sample.set_data(dict(pred_sem_seg=sample.gt_sem_seg))
        metric.process({}, [sample.to_dict()])
    assert metric.compute_metrics(metric.results)['mIoU'] == pytest.approx(100.0)
    with pytest.raises(FileNotFoundError, match='not a proof world'):
        DATASETS.build(dict(type='ProofWorldDataset', data_root=str(tiny_world / 'val'), pipeline=[]))


def test_distillation_dataset_reads_the_world_images(tiny_world):
    from declip_mm.datasets import DeCLIPDistillDataset
    data = DeCLIPDistillDataset(data_root=str(tiny_world), img_dir='train/images', student_size=64, student_patch=8,
                                vfm_patch=8, crop_size=32, max_regions=4)
    assert len(data) == 6 and data[0]['student'].shape == (3, 64, 64)


# ---------------------------------------------------------------- pretraining
def _clip_loss_on(model, images, captions):
    import open_clip
    from open_clip.loss import ClipLoss

    from declip_mm.constants import CLIP_MEAN, CLIP_STD
    x = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode='bilinear', antialias=True)
    x = (x / 255 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        img, txt, scale = model(x, open_clip.get_tokenizer(TEST_CLIP)(captions))[:3]
        return float(ClipLoss()(img, txt, scale))


TEST_CLIP = 'DeCLIP-Proof-Test-ViT-8'   # the proof CLIP's family at 32 px: a test-sized config


def test_pretrain_clip_learns_loads_and_is_cached(tiny_world, tmp_path):
    import open_clip

    from declip_mm.models import DeCLIPViT, OpenCLIPTextEncoder
    from projects.proof_world.proof_world.cache import read_report
    from projects.proof_world.proof_world.data import load_split
    from projects.proof_world.proof_world.pretrain import pretrain_clip
    kwargs = dict(model_name=TEST_CLIP, steps=12, batch_size=6, lr=2e-3, warmup=2, seed=1,
                  cache_dir=str(tmp_path / 'cache'), progress=False, zero_shot_scenes=3, zero_shot_templates='none')
    path = pretrain_clip(tiny_world, **kwargs)
    assert path.parent.parent == tmp_path / 'cache' and path.name == 'clip.pt'
    report = read_report(path)
    assert len(report['losses']) == 12 and report['recipe']['model_name'] == TEST_CLIP
    for split in ('val', 'train'):
        zs = report['zero_shot'][split]
        assert 0 <= zs['things']['precision_at_k'] <= 1 and zs['things']['scenes'] == 3
        assert zs['regions']['regions'] == sum(len(b) for b in load_split(tiny_world, split, 3).box_labels)
    assert set(report['dense_probe']) == {'vanilla', 'csa'}
    assert 0 <= report['dense_probe']['vanilla']['within_image_precision'] <= 1

    train = load_split(tiny_world, 'train')
    torch.manual_seed(1)                               # pretrain_clip's initialisation
    initial = open_clip.create_model(TEST_CLIP).eval()
    trained = open_clip.create_model(TEST_CLIP)
    state = torch.load(path, weights_only=True)
    trained.load_state_dict(state)
    trained.eval()
    assert _clip_loss_on(trained, train.images, train.captions) < _clip_loss_on(initial, train.images, train.captions)

    backbone = DeCLIPViT(model_name=TEST_CLIP, pretrained=str(path), mode='vanilla')
    assert backbone.patch_size == 8 and not backbone.load_report.missing and not backbone.load_report.unexpected
    for name, value in backbone.visual.state_dict().items():
        torch.testing.assert_close(value, state[f'visual.{name}'], rtol=0, atol=0)
    text = OpenCLIPTextEncoder(model_name=TEST_CLIP, pretrained=str(path), templates='none', embedding_cache=False)
    tokens = open_clip.get_tokenizer(TEST_CLIP)(THING_CLASSES[:3])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(trained.encode_text(tokens), dim=-1)
    torch.testing.assert_close(text(THING_CLASSES[:3]).embeddings, expected)

    mtime = path.stat().st_mtime_ns
    copy = pretrain_clip(tiny_world, out_path=tmp_path / 'out' / 'clip.pt', **kwargs)   # cached: nothing trains
    assert path.stat().st_mtime_ns == mtime and copy == tmp_path / 'out' / 'clip.pt'
    for key, value in torch.load(copy, weights_only=True).items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert read_report(copy)['losses'] == report['losses']
    other = pretrain_clip(tiny_world, **dict(kwargs, steps=2, zero_shot_scenes=None))
    assert other != path


def test_pretrain_vfm_learns_and_loads_into_the_vfm_teacher(tiny_world, tmp_path):
    from declip_mm.models.teachers import VFMTeacher
    from projects.proof_world.proof_world.cache import read_report
    from projects.proof_world.proof_world.vfm_pretrain import pretrain_vfm
    kwargs = dict(steps=10, batch_size=6, points=16, lr=2e-3, warmup=1, seed=0, cache_dir=str(tmp_path / 'cache'),
                  progress=False, probe_scenes=(2, 2),
                  model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, init_values=0.1))
    path, cfg = pretrain_vfm(tiny_world, **kwargs)
    report = read_report(path)
    losses = report['losses']
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert set(report['knn_probe']) == {'trained', 'random_init'}
    assert cfg['type'] == 'VFMTeacher' and cfg['checkpoint'] == str(path)

    official = torch.load(path, weights_only=True)
    assert {'register_tokens', 'mask_token', 'cls_token', 'pos_embed'} <= set(official)
    teacher = VFMTeacher(**{k: v for k, v in cfg.items() if k != 'type'})
    assert not teacher.load_report.missing and not teacher.load_report.unexpected
    mine = teacher.model.state_dict()
    torch.testing.assert_close(mine['reg_token'], official['register_tokens'], rtol=0, atol=0)
    torch.testing.assert_close(mine['pos_embed'], official['pos_embed'][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(mine['cls_token'], official['cls_token'] + official['pos_embed'][:, :1], rtol=0, atol=0)
    torch.testing.assert_close(mine['blocks.1.attn.qkv.weight'], official['blocks.1.attn.qkv.weight'], rtol=0, atol=0)
    tokens = teacher(torch.randn(2, 3, 32, 32))
    assert tokens.shape == (2, 16, 32)
    again, _ = pretrain_vfm(tiny_world, **kwargs)
    assert again == path and read_report(again)['losses'] == losses


def test_segment_affinity_auc_against_the_rank_definition():
    """AUC = P(score of a same-label pair > score of a different-label pair), ties counting one half, per image;
    ignored patches are left out and the thing AUC keeps only pairs with a thing patch."""
    import itertools

    import torch

    from projects.proof_world.proof_world.probes import segment_affinity_auc
    from projects.proof_world.proof_world.world import NUM_STUFF
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([[0, 0, 1, NUM_STUFF, NUM_STUFF, NUM_STUFF + 1, 255],
                           [2, 2, 2, NUM_STUFF + 3, NUM_STUFF + 3, 0, 0]])
    affinity = torch.randint(0, 4, (2, 7, 7), generator=gen).float()      # many ties

    def brute(a, y, thing_only):
        pairs = [(i, j) for i, j in itertools.combinations(range(len(y)), 2) if y[i] != 255 and y[j] != 255
                 and (not thing_only or y[i] >= NUM_STUFF or y[j] >= NUM_STUFF)]
        score = {p: float(a[p] + a[p[::-1]]) / 2 for p in pairs}
        pos = [score[p] for p in pairs if y[p[0]] == y[p[1]]]
        neg = [score[p] for p in pairs if y[p[0]] != y[p[1]]]
        wins = sum((s > t) + 0.5 * (s == t) for s in pos for t in neg)
        return wins / (len(pos) * len(neg))

    result = segment_affinity_auc(affinity, labels)
    for key, thing_only in (('affinity_auc', False), ('affinity_thing_auc', True)):
        expected = sum(brute(a, y.tolist(), thing_only) for a, y in zip(affinity, labels)) / 2
        assert abs(result[key] - expected) < 1e-9, key
    perfect = torch.nn.functional.one_hot(labels.clamp(max=NUM_STUFF + 4), NUM_STUFF + 5).float()
    assert segment_affinity_auc(perfect @ perfect.transpose(1, 2), labels)['affinity_auc'] == 1.0
    with pytest.raises(ValueError, match='affinity'):
        segment_affinity_auc(affinity[:, :3], labels)
