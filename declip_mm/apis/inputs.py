"""Users' images and videos -> RGB uint8 arrays (H, W, 3), with every photo format a camera or an editor writes.

* EXIF orientation is applied (a phone photo taken upright comes out upright). The benchmark pipelines
  (``LoadImageFromFile``) do not rotate: results of ``tools/test.py`` and of this API can differ on rotated files.
* grayscale (L, I;16, ...) is repeated to 3 channels; 16-bit (and 32-bit integer) images are scaled to 8 bits
  (value * 255 / 65535, rounded); float images are taken as 0..1; palette images are converted;
* transparency (RGBA, LA, palette with transparency) is composited onto white;
* CMYK / YCbCr / LAB are converted to RGB;
* a file that cannot be decoded (corrupt, truncated, not an image) raises :class:`InputError` naming it;
* a video (by extension) is sampled at ``fps`` frames per second with OpenCV (the first frame, then one frame
  each 1/fps seconds of the video's own timeline).

``collect_inputs`` expands files, folders (their images and videos, sorted, not recursive) and glob patterns;
a path that does not exist or a pattern that matches nothing is an :class:`InputError` before any work starts.
``iter_inputs`` streams the collected files as :class:`InputItem` (each image, each sampled video frame) or
:class:`Skipped` (a file that cannot be read, and why): the ``declip-mm`` runs (``runs.py``) consume that stream.
"""
import glob
import math
import os
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.gif', '.ppm', '.pgm', '.pbm',
                  '.jfif')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv')


class InputError(Exception):
    """An input that cannot be used; the message names the file and the reason."""


class InputItem(NamedTuple):
    """One image to process: ``name`` (unique among the run's outputs), ``image`` (H, W, 3) RGB uint8, the
    ``source`` file, and for video frames the frame index and time in seconds."""
    name: str
    image: np.ndarray
    source: str
    frame: Optional[int] = None
    time: Optional[float] = None


class Skipped(NamedTuple):
    """An input that could not be used: its ``source`` file and the ``reason``."""
    source: str
    reason: str

    @classmethod
    def of(cls, source: str, error: Exception) -> 'Skipped':
        """The reason without the file name that input errors start with (the source holds it)."""
        reason = str(error)
        for prefix in (f'{source}: ', f'{Path(source)}: '):
            if reason.startswith(prefix):
                reason = reason[len(prefix):]
        return cls(source, reason)


def is_video(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_image(path: Union[str, Path]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb_uint8(array: np.ndarray, what: str = 'image') -> np.ndarray:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any integer or float type -> (H, W, 3) uint8.
    uint16 / larger integers are scaled from 0..65535, floats from 0..1, alpha is composited onto white."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise InputError(f'{what}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}')
    if a.dtype == np.uint8:
        a = a.astype(np.float32)
    elif a.dtype == np.bool_:
        a = a.astype(np.float32) * 255
    elif np.issubdtype(a.dtype, np.integer):
        a = np.clip(a.astype(np.float64), 0, 65535) * (255.0 / 65535.0)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError(f'{what}: the float image has NaN or infinite values')
        a = np.clip(a.astype(np.float64), 0, 1) * 255.0
    else:
        raise InputError(f'{what}: unsupported pixel type {a.dtype}')
    if a.shape[-1] in (2, 4):                                          # gray+alpha / RGBA over white
        alpha = a[..., -1:] / 255.0
        a = a[..., :-1] * alpha + 255.0 * (1 - alpha)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(np.clip(np.round(a), 0, 255).astype(np.uint8))


def load_image(path: Union[str, Path]) -> np.ndarray:
    """A user's image file -> (H, W, 3) RGB uint8, EXIF-rotated (module doc). Raises :class:`InputError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()                                   # decode now: truncated / corrupt files fail here
            img = ImageOps.exif_transpose(img)
            return pil_to_rgb(img, str(path))
    except FileNotFoundError as err:
        raise InputError(f'{path}: no such file') from err
    except UnidentifiedImageError as err:
        raise InputError(f'{path}: not an image file PIL can read (corrupt or unknown format)') from err
    except Image.DecompressionBombError as err:
        raise InputError(f'{path}: {err} Raise PIL.Image.MAX_IMAGE_PIXELS to read it anyway') from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f'{path}: cannot decode the image ({err})') from err


def pil_to_rgb(img, what: str = 'image') -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) RGB uint8 (module doc)."""
    mode = img.mode
    if mode in ('RGB', 'L', 'RGBA', 'LA'):
        return to_rgb_uint8(np.asarray(img), what)
    if mode == 'P' or mode == 'PA':
        return to_rgb_uint8(np.asarray(img.convert('RGBA')), what)
    if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
        return to_rgb_uint8(np.asarray(img).astype(np.int64), what)
    if mode == 'F':
        return to_rgb_uint8(np.asarray(img), what)
    if mode == '1':
        return to_rgb_uint8(np.asarray(img).astype(bool), what)
    return to_rgb_uint8(np.asarray(img.convert('RGB')), what)          # CMYK, YCbCr, LAB, HSV, RGBX, ...


def as_rgb_image(image: Union[str, Path, np.ndarray], what: str = 'image') -> np.ndarray:
    """A path (loaded with :func:`load_image`), a PIL image, or an array (converted) -> (H, W, 3) RGB uint8."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, 'mode') and hasattr(image, 'size'):            # a PIL image
        return pil_to_rgb(image, what)
    return to_rgb_uint8(image, what)


def video_frames(path: Union[str, Path], fps: float = 1.0) -> Iterator[Tuple[int, float, np.ndarray]]:
    """(frame index, time in s, RGB uint8 frame) sampled at ``fps`` from a video; :class:`InputError` when it
    cannot be opened or holds no frame."""
    import cv2
    if not fps > 0:
        raise InputError(f'--fps must be positive, got {fps}')
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f'{path}: OpenCV cannot open the video (corrupt, or a codec it lacks)')
        native = cap.get(cv2.CAP_PROP_FPS)
        native = native if native and math.isfinite(native) and native > 0 else None
        index, next_time, yielded = 0, 0.0, 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = index / native if native else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t + 1e-6 >= next_time:
                yield index, t, np.ascontiguousarray(frame[..., ::-1])
                yielded += 1
                next_time = yielded / fps
            index += 1
        if yielded == 0:
            raise InputError(f'{path}: the video has no readable frame')
    finally:
        cap.release()


def video_sample_count(path: Union[str, Path], fps: float) -> Optional[int]:
    """How many frames :func:`video_frames` will give (from the container's frame count; None if unknown)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        native, count = cap.get(cv2.CAP_PROP_FPS), cap.get(cv2.CAP_PROP_FRAME_COUNT)
    finally:
        cap.release()
    if not native or not count or native <= 0 or count <= 0:
        return None
    return int(math.floor((count - 1) / native * fps + 1e-6)) + 1


def iter_inputs(files: Sequence[Path], fps: float, taken: set) -> Iterator[Union[InputItem, Skipped]]:
    """Every image, and every sampled frame of every video, of ``files`` as an :class:`InputItem` named uniquely
    among ``taken`` (:func:`unique_name`; videos' frames ``<stem>_f<index>``), or a :class:`Skipped` with its
    reason. Decoded one at a time, as the caller asks for them."""
    for path in files:
        if is_video(path):
            stem = unique_name(path.stem, taken)
            try:
                for index, t, frame in video_frames(path, fps):
                    yield InputItem(f'{stem}_f{index:06d}', frame, str(path), index, t)
            except InputError as err:
                yield Skipped.of(str(path), err)
            continue
        try:
            image = load_image(path)
        except InputError as err:
            yield Skipped.of(str(path), err)
            continue
        yield InputItem(unique_name(path.stem, taken), image, str(path))


def count_items(files: Sequence[Path], fps: float) -> Optional[int]:
    """How many items :func:`iter_inputs` will give for ``files`` (None when a video's frame count is unknown)."""
    total = 0
    for p in files:
        n = video_sample_count(p, fps) if is_video(p) else 1
        if n is None:
            return None
        total += n
    return total


def collect_inputs(specs: Sequence[str]) -> List[Path]:
    """Files, folders (images and videos inside, sorted) and glob patterns -> the files to process, in order,
    each once. Raises :class:`InputError` for a path that does not exist or a pattern without a match."""
    if not specs:
        raise InputError('no input given: name image files, folders, glob patterns or videos')
    files, seen = [], set()

    def add(p: Path):
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and (is_image(p) or is_video(p)))
            if not inside:
                raise InputError(f'{spec}: the folder holds no image or video files ({", ".join(IMAGE_SUFFIXES)}; '
                                 f'{", ".join(VIDEO_SUFFIXES)})')
            for p in inside:
                add(p)
        elif path.is_file():
            add(path)
        elif glob.has_magic(spec):
            matched = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                raise InputError(f"{spec}: the pattern matches no file")
            for p in matched:
                add(p)
        else:
            raise InputError(f'{spec}: no such file or folder')
    return files


def unique_name(stem: str, taken: set) -> str:
    """``stem``, or ``stem_1``, ``stem_2``... so that two inputs never write the same output files."""
    name, i = stem, 0
    while name in taken:
        i += 1
        name = f'{stem}_{i}'
    taken.add(name)
    return name


def load_segment_ids(path: Union[str, Path], image_shape: Tuple[int, int]) -> np.ndarray:
    """A segment-id PNG -> (H, W) int64 ids: a one-channel 8/16-bit PNG holds the ids; an RGB one the COCO panoptic
    ids R + 256 G + 256^2 B. It must have the image's size (``image_shape``); 0 means no segment."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.load()
            ids = np.asarray(img.convert('RGB') if img.mode in ('RGBA', 'LA') else img)   # 'P': the indices
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise InputError(f'{path}: cannot read the segment-id PNG ({err})') from err
    ids = ids.astype(np.int64)
    if ids.ndim == 3:
        ids = ids[..., 0] + 256 * ids[..., 1] + 65536 * ids[..., 2]
    if tuple(ids.shape) != tuple(image_shape):
        raise InputError(f'{path}: segment ids of size {ids.shape[0]} x {ids.shape[1]}, the image is '
                         f'{image_shape[0]} x {image_shape[1]}')
    return ids
