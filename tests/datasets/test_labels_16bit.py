"""A-847 and PC-459 labels keep their 16-bit range through every loader and the d2 metric.

The label files are the reference's own output: CAT-Seg @6d3a188's ``datasets/prepare_ade20k_full.py``,
``prepare_pascal_context_459.py`` and ``prepare_ade20k_150.py``, run unmodified on tiny synthetic inputs
(``tests/fixtures/reference/labels/PROVENANCE.md``). The datasets are built from the real test configs' pipelines;
the d2 mIoU is checked against detectron2's ``SemSegEvaluator`` arithmetic written out here with numpy.
"""
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import declip_mm  # noqa: F401  (registers the modules)
from declip_mm.datasets.transforms import LoadFullRangeAnnotations, check_label_values, decode_label_array
from declip_mm.evaluation.d2_iou_metric import d2_areas

pytestmark = pytest.mark.reference

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / 'tests/fixtures/reference/labels'
CATSEG = REPO / 'configs/catseg'

# benchmark -> (fixture folder, classes, ignore, the config's image / label folders under data_root)
BENCH = dict(
    ade847=('ade847', 847, 65535, 'images_detectron2/validation', 'annotations_detectron2/validation'),
    pc459=('pc459', 459, 459, 'JPEGImages', 'annotations_detectron2/pc459_val'),
    ade150=('ade150', 150, 255, 'images/validation', 'annotations_detectron2/validation'),
)


def read_like_d2(path) -> np.ndarray:
    """detectron2 SemSegEvaluator's ``load_image_into_numpy_array(f, dtype=int)``."""
    with open(path, 'rb') as f:
        return np.asarray(Image.open(f), dtype=int)


def d2_reference_miou(preds, gts, num_classes, ignore):
    """detectron2 @02b5c4e ``SemSegEvaluator.process`` / ``evaluate``, written out: a (K+1) x (K+1) confusion
    matrix with the ignore label moved to K, rows = prediction, columns = ground truth."""
    k = num_classes
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        gt = np.array(gt, dtype=int)
        gt[gt == ignore] = k
        conf += np.bincount((k + 1) * np.asarray(pred, dtype=int).reshape(-1) + gt.reshape(-1),
                            minlength=conf.size).reshape(conf.shape)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(axis=0).astype(float)
    pos_pred = conf[:-1, :-1].sum(axis=1).astype(float)
    union = pos_gt + pos_pred - tp
    valid = (pos_gt > 0) & (union > 0)
    return 100 * (tp[valid] / union[valid]).sum() / valid.sum()


def hand_made_prediction(gt: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """Right on most pixels; the left 8 columns predict the class modulo 256 (exactly what a uint8 label would
    hold), a 4 x 8 block predicts the last class, ignore pixels predict class 3."""
    gt = gt.astype(np.int64)
    pred = np.where(gt == ignore, 3, gt)
    pred[:, :8] = np.where(gt[:, :8] == ignore, 3, gt[:, :8] % 256)
    pred[4:8, 8:16] = num_classes - 1
    return pred


def lay_out(bench: str, root: Path, fixture_dir: str = None) -> Path:
    """data_root for ``bench``'s config: the fixture labels in the config's label folder + dummy images."""
    folder, _, _, img_dir, seg_dir = BENCH[bench]
    (root / img_dir).mkdir(parents=True, exist_ok=True)
    (root / seg_dir).mkdir(parents=True, exist_ok=True)
    for label in sorted((FIXTURES / (fixture_dir or folder)).iterdir()):
        shutil.copy(label, root / seg_dir / label.name)
        h, w = np.asarray(Image.open(label)).shape
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / img_dir / (label.stem + '.jpg'))
    return root


def build_from_config(config: Path, data_root: Path, **override):
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(str(config))
    init_default_scope('mmseg')
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.update(data_root=str(data_root), **override)
    return DATASETS.build(ds_cfg), cfg


def gt_of(sample) -> np.ndarray:
    data = sample['data_samples'].gt_sem_seg.data
    assert data.dtype == torch.int64
    return data[0].numpy()


def metric_for(cfg, dataset):
    from mmseg.registry import METRICS
    metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = dataset.metainfo
    return metric


def run_metric(metric, dataset, preds):
    from mmengine.structures import PixelData
    for i, pred in enumerate(preds):
        sample = dataset[i]['data_samples']
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        metric.process({}, [sample.to_dict()])
    return metric.compute_metrics(metric.results)['mIoU']


# ---------------------------------------------------------------------------------------------------- fixtures
def test_fixtures_are_the_reference_scripts_output_as_recorded():
    """Each committed label file is listed in PROVENANCE.md with its sha256, PIL mode and values."""
    provenance = (FIXTURES / 'PROVENANCE.md').read_text()
    files = sorted(p for p in FIXTURES.glob('*/*') if p.suffix in ('.tif', '.png'))
    assert len(files) == 7
    for path in files:
        rel = path.relative_to(FIXTURES).as_posix()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf'{re.escape(rel)}\s*\|\s*`?{digest}', provenance), rel
    for bench in ('ade847', 'pc459'):
        for path in sorted((FIXTURES / bench).glob('*.tif')):
            img = Image.open(path)
            assert (img.format, img.mode) == ('TIFF', 'I;16')
            values = np.unique(np.asarray(img))
            assert values.dtype == np.uint16 and (values > 255).sum() >= 3
    ade847 = np.concatenate([np.asarray(Image.open(p)).ravel() for p in (FIXTURES / 'ade847').glob('*.tif')])
    assert {0, 255, 256, 846, 65535} <= set(ade847.tolist()) and ade847[ade847 != 65535].max() == 846
    pc459 = np.concatenate([np.asarray(Image.open(p)).ravel() for p in (FIXTURES / 'pc459').glob('*.tif')])
    assert {0, 256, 458, 459} <= set(pc459.tolist()) and pc459.max() == 459
    assert 65535 in np.asarray(Image.open(FIXTURES / 'pc459_unlabelled_source/2008_000002.tif'))
    ade150 = Image.open(FIXTURES / 'ade150/ADE_val_00000001.png')
    assert ade150.mode == 'L' and set(np.unique(np.asarray(ade150)).tolist()) == {0, 1, 74, 148, 149, 255}


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
def test_both_decoders_keep_the_16_bit_values(backend):
    import mmcv
    for path in sorted(FIXTURES.glob('*/*.tif')):
        raw = mmcv.imfrombytes(path.read_bytes(), flag='unchanged', backend=backend)
        label = decode_label_array(raw, str(path))
        assert label.dtype == np.uint16 and np.array_equal(label, read_like_d2(path))


# ------------------------------------------------------------------------------- the real configs' pipelines
@pytest.mark.parametrize('size', ['b16', 'l14-336'])
@pytest.mark.parametrize('bench', ['ade847', 'pc459'])
def test_catseg_test_configs_load_the_full_range(bench, size, tmp_path):
    config = CATSEG / f'catseg_declip-eva02-{size}_test-{bench}.py'
    dataset, cfg = build_from_config(config, lay_out(bench, tmp_path))
    _, classes, ignore, _, _ = BENCH[bench]
    assert len(dataset.metainfo['classes']) == classes and dataset.ignore_index == ignore
    assert cfg.test_evaluator.ignore_index == ignore                   # the dataset's check and the metric agree
    assert any(t.type.endswith('LoadFullRangeAnnotations') for t in cfg.test_dataloader.dataset.pipeline)
    seen = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        gt = gt_of(sample)
        want = read_like_d2(sample['data_samples'].seg_map_path)
        np.testing.assert_array_equal(gt, want)                         # every value, as detectron2 reads it
        seen |= set(np.unique(gt).tolist())
    assert ignore in seen and max(v for v in seen if v != ignore) == classes - 1
    assert len([v for v in seen if 255 < v < classes]) >= 5


def test_uint8_benchmark_loads_exactly_as_before(tmp_path):
    """A-150 (d2 PNG, ignore 255) through its CAT-Seg test config: the same values and dtype as mmseg's loader."""
    from mmseg.datasets.transforms import LoadAnnotations
    dataset, _ = build_from_config(CATSEG / 'catseg_declip-eva02-b16_test-ade150.py', lay_out('ade150', tmp_path))
    info = dataset.get_data_info(0)
    ours = LoadFullRangeAnnotations()(dict(info, seg_fields=[]))['gt_seg_map']
    theirs = LoadAnnotations()(dict(info, seg_fields=[]))['gt_seg_map']
    assert ours.dtype == theirs.dtype == np.uint8 and np.array_equal(ours, theirs)
    np.testing.assert_array_equal(gt_of(dataset[0]), read_like_d2(info['seg_map_path']))


@pytest.mark.parametrize('config,reduce_zero', [('ade20k', True), ('voc20', False), ('voc21', False),
                                                ('pc59', True), ('coco-object', False), ('cityscapes', False)])
def test_training_free_configs_load_uint8_labels_as_mmseg(config, reduce_zero, tmp_path):
    """The training-free configs (stock mmseg datasets, reduce_zero_label, VOC-20's label_map) use the new loader
    and it gives mmseg's LoadAnnotations' result exactly, dtype included."""
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(str(REPO / f'configs/segmentation/training-free_declip-eva02-b16_{config}.py'))
    loaders = [t for t in cfg.test_dataloader.dataset.pipeline if 'Annotations' in t.type]
    assert [t.type for t in loaders] == ['declip_mm.LoadFullRangeAnnotations']
    init_default_scope('mmseg')
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.update(data_root=str(tmp_path), lazy_init=True)
    (tmp_path / ds_cfg.data_prefix.img_path).mkdir(parents=True)      # VOC / Context datasets assert they exist
    if ds_cfg.get('ann_file'):
        (tmp_path / ds_cfg.ann_file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ds_cfg.ann_file).write_text('')
    dataset = DATASETS.build(ds_cfg)
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 15, 20, 59, 150, 255], (12, 16)).astype(np.uint8)
    path = tmp_path / 'label.png'
    Image.fromarray(label).save(path)
    info = dict(seg_map_path=str(path), label_map=dataset.label_map, reduce_zero_label=dataset.reduce_zero_label,
                seg_fields=[])
    assert dataset.reduce_zero_label == reduce_zero
    ours = LoadFullRangeAnnotations()(dict(info, seg_fields=[]))['gt_seg_map']
    theirs = LoadAnnotations()(dict(info, seg_fields=[]))['gt_seg_map']
    assert ours.dtype == theirs.dtype == np.uint8 and np.array_equal(ours, theirs)


# ------------------------------------------------------------------------------------------------ the metric
@pytest.mark.parametrize('bench', ['ade847', 'pc459'])
def test_d2_miou_on_reference_labels_equals_detectron2_arithmetic(bench, tmp_path):
    """Hand-made predictions against the reference labels through the config's dataset and D2IoUMetric = the
    confusion matrix of detectron2's SemSegEvaluator on the label files as it reads them; mmseg's uint8 loader
    (the bug) gives another number."""
    from mmseg.registry import DATASETS
    _, classes, ignore, _, _ = BENCH[bench]
    dataset, cfg = build_from_config(CATSEG / f'catseg_declip-eva02-b16_test-{bench}.py', lay_out(bench, tmp_path))
    gts = [read_like_d2(dataset.get_data_info(i)['seg_map_path']) for i in range(len(dataset))]
    preds = [hand_made_prediction(gt, classes, ignore) for gt in gts]
    want = d2_reference_miou(preds, gts, classes, ignore)
    got = run_metric(metric_for(cfg, dataset), dataset, preds)
    assert got == pytest.approx(want, abs=0.005)
    assert 60 < want < 95

    old_cfg = cfg.test_dataloader.dataset
    old_cfg.pipeline = [dict(t, type='LoadAnnotations') if 'Annotations' in t['type'] else t
                        for t in old_cfg.pipeline]
    old = DATASETS.build(old_cfg)
    folded = run_metric(metric_for(cfg, old), old, preds)
    assert abs(folded - want) > 5, (folded, want)


def test_d2_areas_match_mmseg_intersect_and_union_on_wide_labels():
    from mmseg.evaluation import IoUMetric
    gt = torch.from_numpy(read_like_d2(FIXTURES / 'ade847/ADE_val_00000001.tif'))
    pred = torch.from_numpy(hand_made_prediction(gt.numpy(), 847, 65535))
    ours = d2_areas(pred, gt, 847, 65535)
    theirs = IoUMetric.intersect_and_union(pred, gt, 847, 65535)
    for a, b in zip(ours, theirs):
        assert a.dtype == torch.int64 and torch.equal(a, b.long())
    # a uint8 prediction map (any model) no longer truncates the label to its type, as IoUMetric.process does
    small = torch.zeros_like(gt, dtype=torch.uint8)
    assert d2_areas(small, gt, 847, 65535)[3].sum() == (gt != 65535).sum()


def test_metric_refuses_a_label_value_that_is_not_a_class_nor_ignore():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from declip_mm.evaluation import D2IoUMetric
    metric = D2IoUMetric(ignore_index=459)
    metric.dataset_meta = dict(classes=tuple(range(459)))
    gt = torch.tensor([[0, 458], [459, 65535]])
    sample = SegDataSample(pred_sem_seg=PixelData(data=torch.zeros(1, 2, 2, dtype=torch.long)),
                           gt_sem_seg=PixelData(data=gt[None]), metainfo=dict(seg_map_path='x/2008_000002.tif'))
    with pytest.raises(ValueError, match=r'x/2008_000002\.tif.*65535'):
        metric.process({}, [sample.to_dict()])


def test_metric_saves_predictions_above_255_in_16_bit(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from declip_mm.evaluation import D2IoUMetric
    metric = D2IoUMetric(ignore_index=65535, output_dir=str(tmp_path), format_only=True)
    metric.dataset_meta = dict(classes=tuple(range(847)))
    pred = torch.tensor([[[0, 300], [846, 5]]])
    metric.process({}, [SegDataSample(pred_sem_seg=PixelData(data=pred),
                                      metainfo=dict(img_path='a/ADE_val_1.jpg')).to_dict()])
    saved = np.asarray(Image.open(tmp_path / 'ADE_val_1.png'))
    assert saved.dtype == np.uint16 and saved.tolist() == [[0, 300], [846, 5]]


# ------------------------------------------------------------------------------------------- clear failures
def test_pc459_label_with_wrapped_unlabelled_pixels_fails_with_the_file(tmp_path):
    """A 0 in a source LabelMap becomes 65535 through the script's uint16 ``mask - 1``; it is not PC-459's ignore
    (459): the loader names the file and the value instead of letting it reach the metric."""
    dataset, _ = build_from_config(CATSEG / 'catseg_declip-eva02-b16_test-pc459.py',
                                   lay_out('pc459', tmp_path, 'pc459_unlabelled_source'))
    with pytest.raises(ValueError, match=r'2008_000002\.tif: values 65535 .*459 classes.*ignore index 459'):
        dataset[0]


def test_custom_label_folder_dataset_with_too_few_classes_fails(tmp_path):
    from mmseg.registry import DATASETS
    root = lay_out('ade847', tmp_path)
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(
        type='LabelFolderSegDataset', data_root=str(root), vocabulary=['a', 'b', 'c'], ignore_index=65535,
        seg_map_suffix='.tif', data_prefix=dict(img_path=BENCH['ade847'][3], seg_map_path=BENCH['ade847'][4]),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='declip_mm.LoadFullRangeAnnotations'),
                  dict(type='PackSegInputs')]))
    with pytest.raises(ValueError, match=r'ADE_val_00000001\.tif: values 149, 150, 254, 255, 256'):
        dataset[0]


def test_check_and_decode_edge_cases():
    check_label_values(np.array([[0, 846], [65535, 3]], np.uint16), 847, 65535)
    with pytest.raises(ValueError, match='f.tif: values 847'):
        check_label_values(np.array([[0, 847]], np.uint16), 847, 65535, 'f.tif')
    with pytest.raises(ValueError, match='single-channel'):
        decode_label_array(np.zeros((4, 4, 3), np.uint8), 'rgb.png')
    assert decode_label_array(np.array([[70000, 1]], np.uint32)).dtype == np.int32
    assert decode_label_array(np.array([[True, False]])).dtype == np.uint8
    with pytest.raises(ValueError, match='not integers'):
        decode_label_array(np.array([[0.5, 1]]), 'f.tif')


def test_reduce_zero_label_and_label_map_on_wide_labels(tmp_path):
    path = tmp_path / 'l.tif'
    Image.fromarray(np.array([[0, 1, 256, 300]], np.uint16)).save(path)
    base = dict(seg_map_path=str(path), reduce_zero_label=True, seg_fields=[])
    out = LoadFullRangeAnnotations(ignore_index=65535)(dict(base))['gt_seg_map']
    assert out.dtype == np.uint16 and out.tolist() == [[65535, 0, 255, 299]]         # 256 -> 255 stays a class
    with pytest.raises(ValueError, match='class 256 into the ignore index 255'):
        LoadFullRangeAnnotations()(dict(base))                                          # default ignore 255
    # mmseg's label_map marks dropped classes with 255: the ignore index for wide labels
    mapped = LoadFullRangeAnnotations(ignore_index=65535)(dict(base, reduce_zero_label=False,
                                                               label_map={0: 255, 256: 1, 300: 2}))
    assert mapped['gt_seg_map'].tolist() == [[65535, 1, 1, 2]]


def test_training_transforms_keep_uint16_labels(tmp_path):
    """The training pipeline's label ops (resize, crop, flip, pack) on an A-847 label: values kept, none folded."""
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(str(CATSEG / 'catseg_declip-eva02-b16_coco-stuff-384_80k.py'))
    root = lay_out('ade847', tmp_path)
    init_default_scope('mmseg')
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(data_root=str(root), vocabulary='ade847', ignore_index=65535, seg_map_suffix='.tif',
                  data_prefix=dict(img_path=BENCH['ade847'][3], seg_map_path=BENCH['ade847'][4]))
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t.type != 'PhotoMetricDistortion']
    dataset = DATASETS.build(ds_cfg)
    source = set(np.unique(read_like_d2(dataset.get_data_info(0)['seg_map_path'])).tolist())
    gt = gt_of(dataset[0])
    assert gt.shape == (384, 384) and set(np.unique(gt).tolist()) <= source
    assert len([v for v in np.unique(gt) if 255 < v < 847]) >= 3
