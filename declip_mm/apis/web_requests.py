"""What the web page's server checks in a request before any work: the limits (image pixels read from the header
before decoding, JSON size and depth, upload size), the Host names it answers, and decoding the image. Pure
functions, tested one by one; ``web_server.py`` applies them to every request."""
import base64
import binascii
import io
import ipaddress
import json
import re
from typing import Iterable, Tuple

from .visualization import NOTE_BAND


DEFAULT_MAX_UPLOAD_MB = 32.0
DEFAULT_MAX_PIXELS = 40_000_000        # 40 MP: the phone / DSLR photos people upload; a 12000 x 12000 bomb is 144 MP
DEFAULT_TIMEOUT = 10.0                 # s without a byte from the client
DEFAULT_REQUEST_TIMEOUT = 60.0         # s for a whole request (line, headers, body) to arrive
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_MAX_QUEUED = 4
MAX_JSON_CONTAINERS = 1000             # '[' + '{' in a body: a request is one object of strings
MAX_JSON_DEPTH = 8
LOCAL_HOSTS = ('localhost', '127.0.0.1', '::1')
RANDOM_WEIGHTS_BAND = 'RANDOM WEIGHTS: results are meaningless'    # on the overlay image itself, as the CLI's
BAND_HEIGHT = NOTE_BAND                # the red note band on overlays (visualization.py)


class RequestError(Exception):
    """A request the server refuses: ``status`` is the HTTP status, the message says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Dropped(Exception):
    """The client stopped sending (timeout, closed connection): answer if possible, then close."""


def split_vocabulary(text) -> list:
    """Form text -> class strings: comma- or newline-separated (synonyms keep their ';'); separators at either end
    are dropped, empty classes in between are kept (the vocabulary check names them)."""
    if text is None:
        return []
    if not isinstance(text, str):
        raise RequestError(400, f'"vocabulary" must be a string of class names, got {type(text).__name__}')
    text = text.replace('\n', ',').strip(', \t\r')
    return [item.strip() for item in text.split(',')] if text else []


def _megapixels(pixels: float) -> str:
    return f'{pixels / 1e6:.1f} MP'


def read_image_header(data, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[bytes, Tuple[int, int]]:
    """A data URL or plain base64 of an image file -> (file bytes, (width, height)) from the image's header only:
    nothing is decoded. Raises :class:`RequestError`: 400 naming the problem, 413 when the header says more than
    ``max_pixels`` pixels (a small file can claim a huge image: a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError
    if data is None or data == '':
        raise RequestError(400, 'no image in the request: choose an image file')
    if not isinstance(data, str):
        raise RequestError(400, f'"image" must be a data URL or base64 text, got {type(data).__name__}')
    if data.startswith('data:'):
        header, _, data = data.partition(',')
        if ';base64' not in header:
            raise RequestError(400, f'the image data URL is not base64-encoded ({header[:40]})')
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(400, f'the image is not valid base64 ({err})') from err
    if not raw:
        raise RequestError(400, 'the image file is empty')
    limit = f'this server takes at most {_megapixels(max_pixels)} ({max_pixels} pixels, --max-pixels)'
    try:
        with Image.open(io.BytesIO(raw)) as img:        # lazy: reads the header, decodes nothing
            width, height = img.size
    except UnidentifiedImageError as err:
        raise RequestError(400, f'the uploaded file ({len(raw)} bytes) is not an image PIL can read '
                                '(corrupt or unknown format)') from err
    except Image.DecompressionBombError as err:        # PIL's own ceiling (2 x Image.MAX_IMAGE_PIXELS)
        claimed = re.search(r'\((\d+) pixels\)', str(err))
        size = _megapixels(int(claimed.group(1))) if claimed else 'over PIL\'s limit'
        raise RequestError(413, f'the image is {size} ({len(raw)} bytes of file); {limit}') from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(400, f'cannot read the uploaded image\'s header ({err})') from err
    if width * height > max_pixels:
        raise RequestError(413, f'the image is {width} x {height} = {_megapixels(width * height)} ({len(raw)} bytes '
                                f'of file); {limit}: scale it down first')
    return raw, (width, height)


def decode_image(raw: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> 'np.ndarray':  # noqa: F821
    """Image file bytes (checked by :func:`read_image_header`) -> (H, W, 3) RGB uint8 (EXIF-rotated, any PIL mode;
    :func:`declip_mm.apis.inputs.pil_to_rgb`). Raises :class:`RequestError` (400) naming the problem. The server
    calls it inside the model's lock: one image is decoded at a time."""
    from PIL import Image, ImageOps

    from .inputs import InputError, pil_to_rgb
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.size[0] * img.size[1] > max_pixels:   # read_image_header's rule, again on what is decoded
                raise RequestError(413, f'the image is {_megapixels(img.size[0] * img.size[1])}; this server takes '
                                        f'at most {_megapixels(max_pixels)} (--max-pixels)')
            img.load()
            ImageOps.exif_transpose(img, in_place=True)     # (not a copy of a possibly 40 MP image)
            if img.mode in ('RGB', 'L', '1'):   # pil_to_rgb's result without its float copies (40 MP: 1.8 -> 0.4 GB)
                import numpy as np
                if img.mode == 'RGB':
                    return np.array(img)
                return np.repeat(np.asarray(img.convert('L'))[..., None], 3, axis=-1)    # '1' -> 0 / 255
            return pil_to_rgb(img, 'the uploaded image')
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, InputError) as err:
        raise RequestError(400, f'cannot decode the uploaded image ({err})') from err


def png_data_url(image) -> str:
    """A PIL image -> 'data:image/png;base64,...'."""
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def with_band(image, text: str = RANDOM_WEIGHTS_BAND):
    """``image`` (PIL) with ``text`` on the red band the command line's overlays carry too
    (:func:`~.visualization.draw_note`, :data:`BAND_HEIGHT` pixels): an overlay of random weights saved from the page
    still says what it is."""
    from .visualization import draw_note
    return draw_note(image.convert('RGB'), text)


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``{}`` is 1), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return depth


def parse_json_body(body: bytes):
    """The request body -> parsed JSON; 400 for bytes that are not UTF-8 JSON, for more than
    :data:`MAX_JSON_CONTAINERS` arrays/objects (counted on the raw bytes, before parsing: no deep recursion, no
    millions of tiny objects) and for nesting deeper than :data:`MAX_JSON_DEPTH`."""
    containers = body.count(b'[') + body.count(b'{')
    if containers > MAX_JSON_CONTAINERS:
        raise RequestError(400, f'the JSON body holds {containers} arrays/objects (brackets), more than '
                                f'{MAX_JSON_CONTAINERS}: a request is one object {{"image", "vocabulary", '
                                '"background"} of strings')
    try:
        value = json.loads(body.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f'the request body is not JSON ({err})') from err
    except RecursionError as err:                       # cannot happen under the bracket count; never a 500
        raise RequestError(400, f'the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)') from err
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(400, f'the JSON body is nested {depth} levels deep, more than {MAX_JSON_DEPTH}: a request '
                                'is one object {"image", "vocabulary", "background"} of strings')
    return value


def host_name(value: str) -> str:
    """A Host header or address -> the bare lower-case name: 'LocalHost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    value = value.strip().lower()
    if value.startswith('['):
        value = value[1:value.find(']')] if ']' in value else value[1:]
    elif value.count(':') == 1:
        value = value.split(':', 1)[0]
    return value.rstrip('.')


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> frozenset:
    """The Host names a server bound to ``host`` answers: the bound address (not a wildcard one), localhost,
    127.0.0.1, ::1 and ``extra``."""
    names = set(LOCAL_HOSTS) | {host_name(name) for name in extra if name.strip()}
    if host and host_name(host) not in ('0.0.0.0', '::', ''):
        names.add(host_name(host))
    return frozenset(names)


def is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
