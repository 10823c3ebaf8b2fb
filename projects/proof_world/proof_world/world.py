"""A procedural image world where the ground truth is known: textured shapes on cluttered textured ground.

Classes (label ids in ``CLASS_NAMES`` order: stuff first, then things; ``IGNORE`` = 255 is never drawn):

* 4 stuff classes, each a texture filling a region of the ground: 'grass' (green vertical streaks), 'sand'
  (beige speckle), 'water' (blue waves), 'brick' (brown bricks with grey mortar).
* 12 thing classes '<colour> <texture> <shape>': 4 shapes (circle, square, triangle, cross) x 3 colours (red,
  blue, yellow), shape i with colour j wearing texture (i + j) mod 3 of (striped, dotted, checkered). Every
  shape, colour and texture is shared by 3 or 4 classes: no single attribute names a class; the shape with the
  colour, or the shape with the texture, does (colour with texture does not: the shape is always needed).

A scene (``render_scene``) is a warped Voronoi partition of the ground into 2-4 regions of distinct stuff
classes, 4-10 small distractor items (specks and strokes, often in the things' colours; they stay labelled as
the stuff under them), then 1-4 things of distinct classes (rotated, sized 0.2-0.4 of the image, textures that
rotate with them, brightness jitter), a global light gradient and pixel noise. Every thing keeps at least half
of its area visible and every stuff region at least 4 % of the image, so the caption, which names every class of
the label map (several phrasings, random order), never names something almost invisible.

Held-out rule: a scene is drawn from ``numpy.random.SeedSequence([seed, SPLIT_STREAM[split]])``, so 'train' and
'val' use independent random streams (no val layout is a train layout), and 'val' scenes are more crowded than
any train scene: 2-4 things on 3-4 stuff regions ('val') against 1-3 things on 2-3 regions ('train').
"""
import json
import shutil
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

WORLD_VERSION = 1   # bump whenever a change alters the rendered pixels, labels or captions

STUFF_CLASSES: List[str] = ['grass', 'sand', 'water', 'brick']
SHAPES = ('circle', 'square', 'triangle', 'cross')
COLOURS = {'red': (205, 45, 40), 'blue': (45, 75, 210), 'yellow': (225, 200, 45)}
TEXTURES = ('striped', 'dotted', 'checkered')
THING_ATTRIBUTES = [(shape, colour, TEXTURES[(i + j) % len(TEXTURES)])
                    for i, shape in enumerate(SHAPES) for j, colour in enumerate(COLOURS)]
THING_CLASSES: List[str] = [f'{colour} {texture} {shape}' for shape, colour, texture in THING_ATTRIBUTES]
CLASS_NAMES: List[str] = STUFF_CLASSES + THING_CLASSES
IGNORE = 255
NUM_STUFF = len(STUFF_CLASSES)

SPLIT_STREAM = {'train': 0, 'val': 1}
# (things per scene, stuff regions per scene), inclusive ranges: the held-out rule
SPLIT_COUNTS = {'train': dict(things=(1, 3), regions=(2, 3)),
                'val': dict(things=(2, 4), regions=(3, 4))}
MIN_VISIBLE_FRACTION = 0.5     # of a thing's own mask
MIN_STUFF_FRACTION = 0.04      # of the image
CAPTION_TEMPLATES = (
    'a photo of {things} on {stuff}.',
    '{things} lying on {stuff}.',
    'a scene of {stuff} with {things}.',
    '{stuff} in the background, {things} in front.',
    'there is {things} on {stuff}.',
    'an image showing {things} over {stuff}.',
)
THINGS_ONLY_TEMPLATES = (   # for captions that leave the ground out (pretraining augmentation; never in the world)
    'a photo of {things}.',
    '{things}.',
    'there is {things}.',
    'an image showing {things}.',
)
STAMP_FILE = 'world.json'

# ---------------------------------------------------------------- palette (for overlays)
PALETTE: List[List[int]] = [[90, 160, 70], [215, 195, 145], [70, 120, 200], [150, 70, 50]] + [
    [int(c * f) for c in COLOURS[colour]] for _, colour, texture in THING_ATTRIBUTES
    for f in [{'striped': 1.0, 'dotted': 0.75, 'checkered': 0.5}[texture]]]


def _check_split(split: str) -> None:
    if split not in SPLIT_STREAM:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAM)}, got '{split}'")


# ---------------------------------------------------------------- stuff textures
def _box_blur(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    return sum(np.roll(a, s, axis=axis) for s in range(-radius, radius + 1)) / (2 * radius + 1)


def _stuff_texture(stuff: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
    """The texture of stuff class ``stuff`` over the whole image: float (H, W, 3) in 0..255."""
    h, w = yy.shape
    tint = rng.uniform(0.88, 1.12)
    name = STUFF_CLASSES[stuff]
    if name == 'grass':
        streaks = _box_blur(rng.normal(0, 1, (h, w)), max(1, round(3 * scale)), axis=0)
        base = np.array([70, 150, 55]) * tint
        return base + streaks[..., None] * np.array([30, 45, 20])
    if name == 'sand':
        grains = (rng.random((h, w)) < 0.06) * -45.0
        return np.array([205, 185, 135]) * tint + (rng.normal(0, 9, (h, w)) + grains)[..., None]
    if name == 'water':
        period = rng.uniform(7, 11) * scale
        wave = np.sin(2 * np.pi * (yy / period + 0.25 * np.sin(2 * np.pi * xx / (3 * period)) + rng.random()))
        return np.array([50, 100, 185]) * tint + wave[..., None] * np.array([25, 30, 35]) + rng.normal(0, 4, (h, w, 1))
    # brick: rows of bricks, every other row shifted by half a brick, grey mortar
    bh, bw = rng.uniform(6, 8) * scale, rng.uniform(12, 16) * scale
    oy, ox = rng.random() * bh, rng.random() * bw
    row = np.floor((yy + oy) / bh)
    col = np.floor((xx + ox + (row % 2) * bw / 2) / bw)
    brick_shade = rng.uniform(0.8, 1.2, (int(row.max()) + 2, int(col.max()) + 2))[row.astype(int), col.astype(int)]
    mortar = ((yy + oy) % bh < 1.2 * scale) | ((xx + ox + (row % 2) * bw / 2) % bw < 1.2 * scale)
    img = np.array([150, 68, 48]) * tint * brick_shade[..., None] + rng.normal(0, 5, (h, w, 1))
    return np.where(mortar[..., None], np.array([185, 180, 170]), img)


def _stuff_partition(rng: np.random.Generator, regions: int, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    """A warped Voronoi partition: (H, W) region index in 0..regions-1, seeds at least 0.3 * size apart."""
    for _ in range(100):
        seeds = rng.uniform(0, size, (regions, 2))
        gaps = np.linalg.norm(seeds[:, None] - seeds[None], axis=-1) + np.eye(regions) * size
        if gaps.min() >= 0.3 * size:
            break
    warp_y = sum(rng.uniform(2, 6) * size / 128 * np.sin(2 * np.pi * (xx * f / size + rng.random()))
                 for f in rng.uniform(0.7, 2.5, 3))
    warp_x = sum(rng.uniform(2, 6) * size / 128 * np.sin(2 * np.pi * (yy * f / size + rng.random()))
                 for f in rng.uniform(0.7, 2.5, 3))
    d = (yy[None] + warp_y[None] - seeds[:, 0, None, None]) ** 2 \
        + (xx[None] + warp_x[None] - seeds[:, 1, None, None]) ** 2
    return d.argmin(0)


# ---------------------------------------------------------------- things
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Mask of ``shape`` of radius r in the object's rotated frame (u, v)."""
    if shape == 'circle':
        return u ** 2 + v ** 2 <= r ** 2
    if shape == 'square':
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == 'cross':
        arm = 0.34 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    # triangle: equilateral, inscribed in the circle of radius r (centroid at the centre), 1.1 r to fill as much
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = np.pi / 2 + 2 * np.pi * k / 3 + np.pi      # outward normal of each side
        inside &= u * np.cos(a) + v * np.sin(a) <= 0.55 * r
    return inside


def _thing_texture(texture: str, colour: np.ndarray, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Colour with its dark complement in ``texture`` (object frame): float (H, W, 3)."""
    half = period / 2
    if texture == 'striped':
        dark = np.floor(u / half) % 2 == 1
    elif texture == 'checkered':
        dark = (np.floor(u / half) + np.floor(v / half)) % 2 == 1
    else:  # dotted
        du, dv = (u % period) - half, (v % period) - half
        dark = du ** 2 + dv ** 2 <= (0.32 * period) ** 2
    return np.where(dark[..., None], colour * 0.3, colour)


def _draw_clutter(img: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> None:
    """4-10 small specks and strokes, half in the things' colours, painted over the ground in place."""
    s = size / 128
    palette = list(COLOURS.values()) + [(60, 60, 60), (230, 230, 225), (120, 90, 60)]
    for _ in range(rng.integers(4, 11)):
        colour = np.array(palette[rng.integers(len(COLOURS))] if rng.random() < 0.5
                          else palette[len(COLOURS) + rng.integers(len(palette) - len(COLOURS))], dtype=float)
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:   # speck: a small ellipse
            ry, rx = rng.uniform(1.5, 4, 2) * s
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:                    # stroke: a short thin segment
            a, length, width = rng.uniform(0, np.pi), rng.uniform(6, 16) * s, rng.uniform(0.6, 1.2) * s
            along = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
            across = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
            mask = (np.abs(along) <= length / 2) & (np.abs(across) <= width)
        img[mask] = colour * rng.uniform(0.8, 1.1)


def _place_things(rng: np.random.Generator, count: int, size: int):
    """(classes, centres (count, 2) yx, radii (count,), angles): distinct classes, centres kept apart."""
    classes = rng.choice(len(THING_CLASSES), count, replace=False)
    radii = rng.uniform(0.1, 0.2, count) * size
    for _ in range(200):
        centres = np.stack([rng.uniform(r * 0.8, size - r * 0.8, 2) for r in radii])
        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        need = 0.85 * (radii[:, None] + radii[None])
        if count == 1 or (d + np.eye(count) * size * 4 >= need).all():
            break
    return classes, centres, radii, rng.uniform(0, 2 * np.pi, count)


# ---------------------------------------------------------------- scenes
def _render_attempt(rng: np.random.Generator, split: str, size: int):
    counts = SPLIT_COUNTS[split]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    scale = size / 128

    regions = int(rng.integers(counts['regions'][0], counts['regions'][1] + 1))
    region_of_pixel = _stuff_partition(rng, regions, yy, xx, size)
    stuff_of_region = rng.choice(NUM_STUFF, regions, replace=False)
    label = stuff_of_region[region_of_pixel].astype(np.uint8)
    img = np.zeros((size, size, 3))
    for k, stuff in enumerate(stuff_of_region):
        tex = _stuff_texture(int(stuff), rng, yy, xx, scale)
        img[region_of_pixel == k] = tex[region_of_pixel == k]
    _draw_clutter(img, rng, yy, xx, size)

    n_things = int(rng.integers(counts['things'][0], counts['things'][1] + 1))
    classes, centres, radii, angles = _place_things(rng, n_things, size)
    masks = []
    for cls, (cy, cx), r, a in zip(classes, centres, radii, angles):
        shape, colour, texture = THING_ATTRIBUTES[cls]
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        mask = _shape_mask(shape, u, v, r)
        rgb = np.array(COLOURS[colour], dtype=float) * rng.uniform(0.85, 1.12)
        tex = _thing_texture(texture, rgb, u, v, period=rng.uniform(5.5, 8) * scale)
        img[mask] = tex[mask]
        label[mask] = NUM_STUFF + cls
        masks.append(mask)

    gy, gx = rng.uniform(-0.12, 0.12, 2)
    light = 1 + gy * (yy / size - 0.5) * 2 + gx * (xx / size - 0.5) * 2
    img = img * light[..., None] + rng.normal(0, 4, img.shape)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)

    boxes, box_labels = [], []
    ok = True
    for cls, mask in zip(classes, masks):
        visible = label == NUM_STUFF + cls
        if visible.sum() < MIN_VISIBLE_FRACTION * mask.sum() or not visible.any():
            ok = False
        ys, xs = np.nonzero(visible)
        if len(ys):
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            box_labels.append(NUM_STUFF + cls)
    present_stuff = [s for s in range(NUM_STUFF) if (label == s).any()]
    if len(present_stuff) != regions or any((label == s).mean() < MIN_STUFF_FRACTION for s in present_stuff):
        ok = False
    return ok, image, label, boxes, box_labels, present_stuff


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]


def make_caption(rng: np.random.Generator, thing_ids: Sequence[int], stuff_ids: Sequence[int]) -> str:
    """A caption naming exactly the given label ids (things with 'a', stuff bare), in random order and phrasing;
    with no stuff ids, a things-only phrasing."""
    if not len(thing_ids):
        raise ValueError('a caption needs at least one thing')
    things = [f'a {CLASS_NAMES[i]}' for i in rng.permutation(list(thing_ids))]
    if not len(stuff_ids):
        return THINGS_ONLY_TEMPLATES[rng.integers(len(THINGS_ONLY_TEMPLATES))].format(things=_join(things))
    stuff = [CLASS_NAMES[i] for i in rng.permutation(list(stuff_ids))]
    return CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(things=_join(things), stuff=_join(stuff))


def scene_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of scene ``seed`` of ``split`` (independent streams per split: the held-out rule)."""
    _check_split(split)
    if seed < 0:
        raise ValueError(f'scene seed must be >= 0, got {seed}')
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_STREAM[split]]))


def render_scene(seed: int, split: str, size: int = 128) -> Dict:
    """Scene ``seed`` of ``split``, deterministic from (seed, split, size).

    Returns dict(image=uint8 (H, W, 3), label=uint8 (H, W) ids into CLASS_NAMES, boxes=float32 (N, 4) xyxy
    pixel-edge boxes of the visible part of each thing, box_labels=int64 (N,) label ids, caption=str).
    Layouts that break the visibility rules are redrawn from the same stream.
    """
    if size < 32:
        raise ValueError(f'scene size must be >= 32 pixels, got {size}')
    rng = scene_rng(seed, split)
    for _ in range(50):
        ok, image, label, boxes, box_labels, stuff = _render_attempt(rng, split, size)
        if ok:
            break
    else:
        raise RuntimeError(f'scene {seed} of {split} at size {size}: no layout met the visibility rules')
    order = np.argsort(box_labels, kind='stable')
    return dict(image=image, label=label,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order],
                box_labels=np.asarray(box_labels, dtype=np.int64)[order],
                caption=make_caption(rng, box_labels, stuff))


# ---------------------------------------------------------------- writing a world to disk
def world_params(n_train: int, n_val: int, size: int = 128, seed: int = 0) -> Dict:
    """What identifies a written world (stored in its stamp file)."""
    return dict(version=WORLD_VERSION, n_train=int(n_train), n_val=int(n_val), size=int(size), seed=int(seed))


def read_world_params(root) -> Dict:
    """The parameters in ``root``'s stamp file; a clear error when ``root`` is not a written world."""
    stamp = Path(root) / STAMP_FILE
    if not stamp.is_file():
        raise FileNotFoundError(f'{root} is not a proof world (no {STAMP_FILE}); write it with write_world()')
    return json.loads(stamp.read_text())['params']


def _progress(iterable, total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is optional here: the world needs only numpy and Pillow
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit='scene', leave=False, disable=not enabled)


def _write_split(folder: Path, split: str, count: int, size: int, first_seed: int, progress: bool) -> None:
    from PIL import Image
    (folder / 'images').mkdir(parents=True)
    (folder / 'labels').mkdir()
    records = []
    for i in _progress(range(count), count, f'world {split}', progress):
        scene = render_scene(first_seed + i, split, size)
        name = f'{i:05d}.png'
        Image.fromarray(scene['image']).save(folder / 'images' / name)
        Image.fromarray(scene['label']).save(folder / 'labels' / name)
        records.append(dict(id=i, scene_seed=first_seed + i, file_name=f'images/{name}',
                            label_file=f'labels/{name}', width=size, height=size, caption=scene['caption'],
                            boxes=scene['boxes'].tolist(), box_labels=scene['box_labels'].tolist()))
    (folder / 'annotations.json').write_text(json.dumps(dict(split=split, classes=CLASS_NAMES, images=records)))


def write_world(root, n_train: int, n_val: int, size: int = 128, seed: int = 0, overwrite: bool = False,
                progress: bool = True) -> Path:
    """Write ``root/{train,val}/{images,labels}/%05d.png`` and ``root/{train,val}/annotations.json``.

    Scene i of a split is ``render_scene(seed * 1_000_000 + i, split, size)``. Idempotent: ``root/world.json``
    (written last) stamps the parameters; the same call again returns at once. A world with other parameters
    raises unless ``overwrite=True`` (then it is rewritten); a folder that holds something else always raises.
    ``progress``: a progress bar per split. Returns ``root``.
    """
    root = Path(root).expanduser()
    params = world_params(n_train, n_val, size, seed)
    if n_train < 1 or n_val < 1:
        raise ValueError(f'n_train and n_val must be >= 1, got {n_train}, {n_val}')
    stamp = root / STAMP_FILE
    if stamp.is_file():
        old = read_world_params(root)
        if old == params and all((root / s / 'annotations.json').is_file() for s in SPLIT_STREAM):
            return root
        if not overwrite:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            raise FileExistsError(f'{root} holds a proof world with other parameters (stored, asked): {diff}; '
                                  'pass overwrite=True to rewrite it or choose another folder')
    elif root.exists() and not (root / '.writing').exists() and any(root.iterdir()):
        raise FileExistsError(f'{root} exists and is not a proof world (no {STAMP_FILE}); choose an empty folder')
    root.mkdir(parents=True, exist_ok=True)
    (root / '.writing').touch()
    stamp.unlink(missing_ok=True)
    for split, count in (('train', n_train), ('val', n_val)):
        shutil.rmtree(root / split, ignore_errors=True)
        _write_split(root / split, split, count, size, seed * 1_000_000, progress)
    stamp.write_text(json.dumps(dict(params=params, classes=CLASS_NAMES, rule=__doc__.split('Held-out rule: ')[1])))
    (root / '.writing').unlink()
    return root
