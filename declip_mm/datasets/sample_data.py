"""Real labelled sample photos, taken from PyPI packages (nothing is committed to the repository).

Sources (pinned versions; every kept file is checked against the SHA-256 below):

* labelme 6.3.1 (sdist ``examples/instance_segmentation``): 3 PASCAL VOC 2011 photos, their VOC-21
  class masks and a COCO instance json;
* imgaug 0.4.0 (wheel): the quokka photo with its box and polygon;
* scikit-image 0.26.0 (wheel ``skimage/data``): 5 colour photos, unlabelled.

Layout written under ``root`` (default ``<repo>/data/sample``, git-ignored)::

    voc/JPEGImages/<id>.jpg  voc/SegmentationClass/<id>.png  voc/ImageSets/Segmentation/val.txt
    coco/images/<name>.jpg   coco/annotations/instances_sample.json   (VOC-20 classes + quokka)
    photos/*                 every photo above (distillation input)

Archives are cached in ``$DECLIP_CACHE/sample-packages`` (default ``~/.cache/declip-mm``), so a fresh
clone lays the data out again without the network.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / 'data' / 'sample'
LAYOUT_VERSION = 1

VOC_IDS = ('2011_000003', '2011_000006', '2011_000025')
VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
               'tvmonitor')
SKIMAGE_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg', 'motorcycle_left.png')

_LABELME = 'labelme-6.3.1/examples/instance_segmentation/'
PACKAGES = {
    'labelme': dict(requirement='labelme==6.3.1', kind='sdist', pattern='labelme-6.3.1.tar.gz'),
    'imgaug': dict(requirement='imgaug==0.4.0', kind='wheel', pattern='imgaug-0.4.0-*.whl'),
    'scikit-image': dict(requirement='scikit-image==0.26.0', kind='wheel', pattern='scikit_image-0.26.0-*.whl',
                         platform='manylinux_2_28_x86_64', python='3.11'),
}
# member path inside the archive -> sha256
SHA256: Dict[str, Dict[str, str]] = {
    'labelme': {
        _LABELME + 'data_dataset_voc/JPEGImages/2011_000003.jpg':
            '4409c3cd06827e2add28a6dbde4beaceedc40540019065a88fa4306ecfbf9183',
        _LABELME + 'data_dataset_voc/JPEGImages/2011_000006.jpg':
            '0a14b0d2e4fd82d1f20c911875051b2501c1a805f77fe8c05cad84ee1d6308d7',
        _LABELME + 'data_dataset_voc/JPEGImages/2011_000025.jpg':
            '01f0b224bdc6b2b1d8155070d8544cc2642d8ab142b418969ec8aa95ac721bd5',
        _LABELME + 'data_dataset_voc/SegmentationClass/2011_000003.png':
            'f6ed481dea6f91e54e752132354b8463f2ea90658d902b458f9b6e12379fa799',
        _LABELME + 'data_dataset_voc/SegmentationClass/2011_000006.png':
            'b65dc24912968e4b300f955d53f1fc170caa01d3bb87485cd96bd2e526a06589',
        _LABELME + 'data_dataset_voc/SegmentationClass/2011_000025.png':
            '35845faa1e2daa8079fc620fbf02ebd4e636d754277ae5319645f643351195e5',
        _LABELME + 'data_dataset_coco/annotations.json':
            '935081d34679b92a74e0dc1acf04e5ac97b01cba7eefe26d5572e761ebf16ec2',
    },
    'imgaug': {
        'imgaug/quokka.jpg': 'bf1059d0f925e7d0c712cadf07a04ba4cfc98957d7be65d3a7d8ae0c464cd76e',
        'imgaug/quokka_annotations.json': 'ac105c75c464fb5174d9a3f109a6440f8a3fdc6b52dfde4b7610c4ddc47471e1',
    },
    'scikit-image': {
        'skimage/data/astronaut.png': '88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5',
        'skimage/data/chelsea.png': '596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb',
        'skimage/data/coffee.png': 'cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7',
        'skimage/data/rocket.jpg': 'c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c',
        'skimage/data/motorcycle_left.png': 'db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179',
    },
}


class SampleDataError(RuntimeError):
    """The sample data could not be fetched or failed its checksum."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_cache() -> Path:
    return Path(os.environ.get('DECLIP_CACHE', Path.home() / '.cache' / 'declip-mm')) / 'sample-packages'


def download_package(name: str) -> Path:
    """The cached archive of package ``name``, downloaded with pip on first use."""
    spec = PACKAGES[name]
    folder = package_cache()
    found = sorted(folder.glob(spec['pattern']))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check', '-d', str(folder)]
    if spec['kind'] == 'sdist':
        cmd += ['--no-binary', ':all:']
    else:
        cmd += ['--only-binary', ':all:']
        if 'platform' in spec:
            cmd += ['--platform', spec['platform'], '--python-version', spec['python'], '--implementation', 'cp']
    cmd.append(spec['requirement'])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob(spec['pattern']))
    if proc.returncode != 0 or not found:
        tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise SampleDataError(
            f"could not download {spec['requirement']} from the Python package index, which the sample data comes "
            f"from (needed once; then cached in {folder}).\n`{' '.join(cmd)}` said:\n{tail}")
    return found[0]


def read_members(name: str) -> Dict[str, bytes]:
    """The checked files of package ``name``: {member path: bytes}; raises on a checksum mismatch."""
    archive = download_package(name)
    wanted = SHA256[name]
    out = {}
    if archive.name.endswith('.tar.gz'):
        with tarfile.open(archive) as tar:
            for member in wanted:
                handle = tar.extractfile(member)
                if handle is None:
                    raise SampleDataError(f'{archive} has no file {member}')
                out[member] = handle.read()
    else:
        with zipfile.ZipFile(archive) as zf:
            for member in wanted:
                out[member] = zf.read(member)
    for member, data in out.items():
        if sha256_bytes(data) != wanted[member]:
            raise SampleDataError(f'checksum mismatch for {member} in {archive}: got {sha256_bytes(data)}, expected '
                                  f'{wanted[member]}. Delete {archive} and run again.')
    return out


def _polygon_area(xs, ys) -> float:
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def build_coco(labelme_json: dict, quokka: dict, quokka_size) -> dict:
    """COCO instance json over the 3 VOC photos (labelme's annotations) and the quokka photo."""
    voc_names = [c['name'] for c in sorted(labelme_json['categories'], key=lambda c: c['id']) if c['id'] > 0]
    categories = [dict(id=i + 1, name=n, supercategory='voc') for i, n in enumerate(voc_names)]
    categories.append(dict(id=len(categories) + 1, name='quokka', supercategory='animal'))
    images, annotations = [], []
    old_to_new = {}
    for img in sorted(labelme_json['images'], key=lambda i: i['file_name']):
        new_id = len(images) + 1
        old_to_new[img['id']] = new_id
        images.append(dict(id=new_id, file_name=Path(img['file_name']).name, width=img['width'],
                           height=img['height']))
    for ann in sorted(labelme_json['annotations'], key=lambda a: (old_to_new[a['image_id']], a['id'])):
        annotations.append(dict(id=len(annotations) + 1, image_id=old_to_new[ann['image_id']],
                                category_id=ann['category_id'], segmentation=ann['segmentation'], area=ann['area'],
                                bbox=ann['bbox'], iscrowd=ann.get('iscrowd', 0)))
    quokka_id = len(images) + 1
    images.append(dict(id=quokka_id, file_name='quokka.jpg', width=quokka_size[0], height=quokka_size[1]))
    box = quokka['bounding_boxes'][0]
    xs = [p['x'] for p in quokka['polygons'][0]['keypoints']]
    ys = [p['y'] for p in quokka['polygons'][0]['keypoints']]
    annotations.append(dict(
        id=len(annotations) + 1, image_id=quokka_id, category_id=categories[-1]['id'],
        segmentation=[[v for xy in zip(xs, ys) for v in xy]], area=_polygon_area(xs, ys),
        bbox=[box['x1'], box['y1'], box['x2'] - box['x1'], box['y2'] - box['y1']], iscrowd=0))
    return dict(info=dict(description='declip-mm sample set (labelme 6.3.1 VOC examples + imgaug quokka)'),
                images=images, annotations=annotations, categories=categories)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def fetch_sample_data(root=None, force: bool = False) -> Path:
    """Download (once), check and lay out the sample data; returns its root folder."""
    from PIL import Image
    root = Path(root) if root is not None else DEFAULT_ROOT
    stamp = root / '.complete'
    if stamp.is_file() and not force and stamp.read_text().strip() == str(LAYOUT_VERSION):
        return root
    files = {name: read_members(name) for name in PACKAGES}
    tmp = root.with_name(root.name + '.partial')
    shutil.rmtree(tmp, ignore_errors=True)

    labelme = files['labelme']
    for voc_id in VOC_IDS:
        jpg = labelme[f'{_LABELME}data_dataset_voc/JPEGImages/{voc_id}.jpg']
        _write(tmp / 'voc' / 'JPEGImages' / f'{voc_id}.jpg', jpg)
        _write(tmp / 'voc' / 'SegmentationClass' / f'{voc_id}.png',
               labelme[f'{_LABELME}data_dataset_voc/SegmentationClass/{voc_id}.png'])
        _write(tmp / 'coco' / 'images' / f'{voc_id}.jpg', jpg)
        _write(tmp / 'photos' / f'{voc_id}.jpg', jpg)
    _write(tmp / 'voc' / 'ImageSets' / 'Segmentation' / 'val.txt', ('\n'.join(VOC_IDS) + '\n').encode())

    quokka_jpg = files['imgaug']['imgaug/quokka.jpg']
    quokka = json.loads(files['imgaug']['imgaug/quokka_annotations.json'])
    quokka_size = Image.open(io.BytesIO(quokka_jpg)).size
    _write(tmp / 'coco' / 'images' / 'quokka.jpg', quokka_jpg)
    _write(tmp / 'photos' / 'quokka.jpg', quokka_jpg)
    coco = build_coco(json.loads(labelme[f'{_LABELME}data_dataset_coco/annotations.json']), quokka, quokka_size)
    _write(tmp / 'coco' / 'annotations' / 'instances_sample.json', json.dumps(coco, indent=1).encode())

    for photo in SKIMAGE_PHOTOS:
        _write(tmp / 'photos' / photo, files['scikit-image'][f'skimage/data/{photo}'])

    (tmp / '.complete').write_text(str(LAYOUT_VERSION))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
