"""Distillation data on the real sample photos: views, grid regions, crops, unreadable images."""
import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.datasets import GRID_PAIRS, DeCLIPDistillDataset, declip_distill_collate


def test_grid_pairs_are_the_24_of_the_paper():
    assert len(GRID_PAIRS) == 24 and len(set(GRID_PAIRS)) == 24
    for m, n in GRID_PAIRS:
        assert 1 <= m <= 6 and math.ceil(m / 2) <= n <= min(2 * m, 6)


def content_box(view: torch.Tensor):
    """Extent (w, h) of the non-black top-left content of a (3, S, S) view."""
    mask = view.sum(0) > 0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.max()) + 1, int(ys.max()) + 1


def test_views_boxes_and_crops(sample_root):
    ds = DeCLIPDistillDataset(img_dir=str(sample_root / 'photos'), student_size=224, student_patch=16, vfm_patch=14,
                              crop_size=96, sd_size=128, max_regions=20)
    assert len(ds) == 9 and ds.vfm_size == 196
    idx = [p.name for p in ds.files].index('motorcycle_left.png')    # 741 x 500, landscape
    s = ds[idx]
    w, h = Image.open(ds.files[idx]).size
    assert s['student'].shape == (3, 224, 224) and s['student'].dtype == torch.uint8
    assert s['vfm'].shape == (3, 196, 196) and s['sd'].shape == (3, 128, 128)
    # same geometry: longest side fills the view, padding right/bottom
    for view, side in ((s['student'], 224), (s['vfm'], 196), (s['sd'], 128)):
        cw, ch = content_box(view)
        assert cw == side and abs(ch - round(h * side / w)) <= 1
    boxes = s['boxes']
    k = len(boxes)
    assert 1 <= k <= 20 and s['crops'].shape == (k, 3, 96, 96)
    # boxes tile a grid of the resized image area
    xs, ys = sorted({*boxes[:, 0].tolist(), *boxes[:, 2].tolist()}), sorted({*boxes[:, 1].tolist(), *boxes[:, 3].tolist()})
    assert xs[0] >= 0 and xs[-1] <= 224 + 1e-3 and ys[-1] <= round(h * 224 / w) + 1e-3
    assert any((m * n == k) or (m * n > 20 and k == 20) for m, n in GRID_PAIRS)
    # each crop is the box's content from the original image, resized and centre-padded
    scale = 224 / w
    original = np.asarray(Image.open(ds.files[idx]).convert('RGB')).astype(np.float32)
    for box, crop in zip(boxes, s['crops']):
        x0, y0, x1, y1 = (box / scale).tolist()
        region = original[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))]
        content = crop[:, crop.sum(dim=(0, 2)) > 0][:, :, crop.sum(dim=(0, 1)) > 0]
        ratio = region.shape[1] / region.shape[0]
        assert abs(content.shape[2] / content.shape[1] - ratio) < 0.1 * max(ratio, 1 / ratio) + 0.05
        assert max(content.shape[1:]) == 96
        assert abs(content.float().mean().item() - region.mean()) < 12  # same pixels, resampled


def test_draws_depend_on_seed_epoch_and_index_only(sample_root):
    a = DeCLIPDistillDataset(img_dir=str(sample_root / 'photos'), student_size=160, max_regions=20)
    b = DeCLIPDistillDataset(img_dir=str(sample_root / 'photos'), student_size=160, max_regions=20)
    torch.manual_seed(123)
    np.random.seed(5)
    for i in range(len(a)):
        torch.testing.assert_close(a[i]['boxes'], b[i]['boxes'], rtol=0, atol=0)
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append(torch.cat([a[i]['boxes'].flatten() for i in range(len(a))]))
    assert len({tuple(e.tolist()) for e in epochs}) > 1


def test_unreadable_images_are_skipped_and_counted(sample_root, tmp_path, caplog):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    shutil.copy(sample_root / 'photos' / 'chelsea.png', folder / 'a.png')
    (folder / 'b.jpg').write_bytes(b'this is not a jpeg')
    jpeg = (sample_root / 'photos' / 'quokka.jpg').read_bytes()
    (folder / 'c.jpg').write_bytes(jpeg[:len(jpeg) // 3])             # truncated
    shutil.copy(sample_root / 'photos' / 'coffee.png', folder / 'd.png')
    ds = DeCLIPDistillDataset(img_dir=str(folder), student_size=96, crop_size=32)
    assert len(ds) == 4
    with caplog.at_level(logging.WARNING, logger='declip_mm'):
        sample = ds[1]
    assert sample['img_path'].endswith('d.png') and sample['skipped'] == 2
    assert 'skipping unreadable image' in caplog.text and 'b.jpg' in caplog.text and 'c.jpg' in caplog.text
    assert ds[0]['skipped'] == 0
    batch = declip_distill_collate([ds[0], ds[1]])['inputs']
    assert batch['skipped'].tolist() == [0, 2] and batch['student'].shape == (2, 3, 96, 96)
    assert batch['crops'].shape[0] == sum(len(b) for b in batch['boxes'])

    for name in ('a.png', 'd.png'):
        (folder / name).write_bytes(b'')
    with pytest.raises(RuntimeError, match='none of the 4 images'):
        DeCLIPDistillDataset(img_dir=str(folder), student_size=96)[0]


def test_coco_json_listing_and_errors(sample_root, tmp_path):
    ds = DeCLIPDistillDataset(data_root=str(sample_root / 'coco'), img_dir='images',
                              ann_file='annotations/instances_sample.json', student_size=96, crop_size=32)
    names = [img['file_name'] for img in json.load(open(sample_root / 'coco/annotations/instances_sample.json'))['images']]
    assert [p.name for p in ds.files] == names
    with pytest.raises(FileNotFoundError, match='annotation file not found'):
        DeCLIPDistillDataset(img_dir=str(tmp_path), ann_file='missing.json')
    with pytest.raises(FileNotFoundError, match='no images found'):
        DeCLIPDistillDataset(img_dir=str(tmp_path))
    with pytest.raises(ValueError, match='not a multiple of student_patch'):
        DeCLIPDistillDataset(img_dir=str(sample_root / 'photos'), student_size=100)


def _write_pair(folder, name, image_hw, labels):
    (folder / 'images' / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / 'labels' / name).parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*image_hw, 3), dtype=np.uint8)).save(folder / 'images' / f'{name}.jpg')
    Image.fromarray(labels).save(folder / 'labels' / f'{name}.png')


def test_label_maps_follow_the_vfm_view_geometry(tmp_path):
    """label_dir: each sample's vfm_labels is the label map resized like the VFM view (longest side, nearest at
    pixel centres as PIL's NEAREST) and padded with ignore_index; 16-bit labels keep their values."""
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 60000, (30, 40)).astype(np.uint16)            # 16-bit, landscape
    tall = rng.integers(0, 20, (44, 22)).astype(np.uint8)                # 8-bit, portrait, in a subfolder
    _write_pair(tmp_path, 'a', wide.shape, wide)
    _write_pair(tmp_path, 'sub/b', tall.shape, tall)
    ds = DeCLIPDistillDataset(data_root=str(tmp_path), img_dir='images', label_dir='labels', student_size=64,
                              student_patch=16, vfm_patch=14, crop_size=32, ignore_index=255)
    assert ds.vfm_size == 56
    for sample, labels in ((ds[0], wide), (ds[1], tall)):
        out = sample['vfm_labels']
        assert out.shape == (56, 56) and out.dtype == torch.int64
        h, w = labels.shape
        new_w, new_h = round(w * 56 / max(w, h)), round(h * 56 / max(w, h))
        want = np.asarray(Image.fromarray(labels.astype(np.int32), 'I').resize((new_w, new_h), Image.NEAREST))
        np.testing.assert_array_equal(out[:new_h, :new_w].numpy(), want)
        assert (out[new_h:] == 255).all() and (out[:, new_w:] == 255).all()
        assert content_box(sample['vfm']) == (new_w, new_h)                # the view's own geometry
    batch = declip_distill_collate([ds[0], ds[1]])['inputs']
    assert batch['vfm_labels'].shape == (2, 56, 56) and int(batch['vfm_labels'].max()) == int(wide.max())
    assert 'vfm_labels' not in declip_distill_collate([DeCLIPDistillDataset(
        img_dir=str(tmp_path / 'images'), student_size=64, crop_size=32)[0]])['inputs']


def test_label_map_errors_name_the_file(tmp_path):
    _write_pair(tmp_path, 'a', (30, 40), np.zeros((30, 40), np.uint8))
    _write_pair(tmp_path, 'b', (30, 40), np.zeros((31, 40), np.uint8))                 # wrong size
    (tmp_path / 'images' / 'c.jpg').write_bytes((tmp_path / 'images' / 'a.jpg').read_bytes())   # no label map
    with pytest.raises(FileNotFoundError, match=r'1 of 3 label maps missing .*c\.png'):
        DeCLIPDistillDataset(data_root=str(tmp_path), img_dir='images', label_dir='labels', student_size=64)
    (tmp_path / 'images' / 'c.jpg').unlink()
    ds = DeCLIPDistillDataset(data_root=str(tmp_path), img_dir='images', label_dir='labels', student_size=64)
    with pytest.raises(ValueError, match=r'b\.png is 40x31, its image .*b\.jpg is 40x30'):
        ds[1]
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / 'labels' / 'a.png')       # RGB, not labels
    with pytest.raises(ValueError, match=r'a\.png has shape \(30, 40, 3\)'):
        ds[0]
