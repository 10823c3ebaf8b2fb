"""A local web page for open-vocabulary segmentation: upload an image, type a vocabulary, see the overlay and the
area of every class. Standard library only (``http.server``; docs/inference.md says why), the page is plain
HTML + JS (:mod:`.web_page`).

    declip-mm serve --backbone FILE --text-weights W [--model-name NAME] [--host 127.0.0.1] [--port 8000]
                    [--device cpu|cuda] [--precision auto|fp32|bf16|fp16] [--example-image FILE] [limits ...]
    declip-mm serve --random-weights ...               (random towers, for trying the page: a banner says so)
    python -m declip_mm.apis.web_app ...               (the same)

then open http://127.0.0.1:8000/ (``/?example=1`` segments the example photo at once).

HTTP interface (JSON in, JSON out):

* ``GET /`` the page; ``GET /api/info`` ``{"model", "random_weights", "max_pixels", "max_upload_mb"}``;
* ``GET /api/example`` ``{"image": data URL, "vocabulary": str, "background": str or null}`` (the example photo:
  ``--example-image``, else the first sample VOC photo of ``tools/fetch_sample_data.py`` when it is laid out);
* ``POST /api/segment`` (``Content-Type: application/json``) with ``{"image": data URL or plain base64 of an image
  file, "vocabulary": "cat, dog, sofa; couch", "background": "NAME" or null}``: 200 ``{"class_names",
  "background", "areas": [[name, fraction], ...], "overlay": PNG data URL, "width", "height", "seconds",
  "random_weights"}`` (+ ``"warning"`` with random weights);
* ``POST /api/attention`` (same rules) with ``{"image", "click": [x, y], "shown": [width, height]}``, a click at
  (x, y) on the image shown width x height on the page: 200 ``{"point": [x, y] in the image's pixels, "token":
  [row, col], "grid": [h, w], "panels": [names], "figure": PNG data URL, "random_weights"}`` (the attention and
  affinity explorer, :mod:`.attention`; page coordinates -> pixels with :func:`.attention.page_to_pixel`, pixels
  -> token with :func:`.attention.pixel_to_token`, as the command line and the API).

Classes are separated by commas or new lines, synonyms of a class by ';' (the vocabulary is never read as a file
name here: the server must not open files a browser names). A bad request answers 4xx ``{"error": message}`` and
the page shows the message; an unexpected failure answers 500 with the exception's message; the server keeps
serving either way.

What a request must pass (each refusal is a JSON error naming the limit and its option):

* ``Host`` is this server's address, localhost, 127.0.0.1, [::1] or one of ``--allowed-hosts`` (403: a DNS-rebinding
  page cannot reach the server through its own domain name);
* a POST carries no foreign ``Origin`` (it must equal ``Host``; ``Sec-Fetch-Site`` other than same-origin/none is
  refused too): 403, so no other website can drive the server from a visitor's browser; and it is
  ``Content-Type: application/json`` (415), which a cross-origin page cannot send without a CORS preflight;
* the body is at most ``--max-upload-mb`` (413), arrives with no pause over ``--timeout`` seconds and within
  ``--request-timeout`` seconds of the connection's request (408 / dropped), and is JSON with at most
  :data:`MAX_JSON_CONTAINERS` arrays/objects nested at most :data:`MAX_JSON_DEPTH` deep (400);
* the image's header says at most ``--max-pixels`` pixels (413, read before anything is decoded);
* at most ``--max-queued`` uploads are held at once, the one being segmented included (503 beyond), and at most
  ``--max-connections`` connections are open (503 beyond). The image is decoded and segmented one request at a
  time, inside the model's lock, so concurrent uploads never decode more than one image at once.

The page's code is three modules: this one (the service that turns a request into a segmentation or an attention
figure, and the ``serve`` command), ``web_server.py`` (HTTP routes and the per-request checks) and
``web_requests.py`` (the checks themselves: limits, Host names, image header, JSON).
"""
import argparse
import base64
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .web_page import render_page
from .web_requests import (BAND_HEIGHT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_QUEUED,  # noqa: F401
                           DEFAULT_MAX_UPLOAD_MB, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TIMEOUT, MAX_JSON_CONTAINERS,
                           MAX_JSON_DEPTH, RANDOM_WEIGHTS_BAND, RequestError, allowed_host_names, decode_image,
                           host_name, is_loopback, json_depth, parse_json_body, png_data_url, read_image_header,
                           split_vocabulary, with_band)
from .web_server import WebServer, make_server  # noqa: F401  (re-exported: the server's public names live here too)

DEFAULT_PORT = 8000
EXAMPLE_VOCABULARY = 'person; people, bottle, food; dish, table, wall, floor'   # fits the first VOC photo
EXAMPLE_BACKGROUND = None
RANDOM_WEIGHTS_WARNING = ('RANDOM WEIGHTS: this server runs randomly initialised towers (--random-weights), so the '
                          'overlay and the areas are noise, not a segmentation')


class SegmentationService:
    """The server's work, without HTTP: request dicts -> response dicts (tested directly and through HTTP).

    Args:
        segmenter: ``segmenter(image (H, W, 3) uint8, classes, background=NAME or None)`` -> a result with
            ``class_names``, ``background``, ``areas()`` ({name: fraction}) and ``overlay()`` (PIL image), i.e.
            :class:`declip_mm.apis.OpenVocabSegmenter`.
        description: what ``/api/info`` reports as the model.
        example_image: the example photo's file (None: no example).
        max_pixels: the largest image (width x height, from its header) a request may carry.
        random_weights: the segmenter's towers are random: every answer, its overlay (a red band on top) and the
            page say so.
    """

    def __init__(self, segmenter: Callable, description: str = '', example_image: Optional[str] = None,
                 example_vocabulary: str = EXAMPLE_VOCABULARY, example_background: Optional[str] = EXAMPLE_BACKGROUND,
                 max_pixels: int = DEFAULT_MAX_PIXELS, random_weights: bool = False, explorer=None):
        self.segmenter = segmenter
        self._explorer = explorer                            # an AttentionExplorer, a callable making one, or None
        self.description = description
        self.example_image = example_image
        self.example_vocabulary, self.example_background = example_vocabulary, example_background
        self.max_pixels = int(max_pixels)
        self.random_weights = bool(random_weights)
        self._lock = threading.Lock()

    def _flag(self) -> dict:
        return dict(random_weights=True, warning=RANDOM_WEIGHTS_WARNING) if self.random_weights else \
            dict(random_weights=False)

    def info(self) -> dict:
        return dict(model=self.description, max_pixels=self.max_pixels, **self._flag())

    def page(self) -> str:
        return render_page(RANDOM_WEIGHTS_WARNING if self.random_weights else None)

    def example(self) -> dict:
        if self.example_image is None:
            raise RequestError(404, 'this server has no example photo: start it with --example-image FILE (or lay '
                                    'out the sample photos with tools/fetch_sample_data.py)')
        path = Path(self.example_image)
        suffix = path.suffix.lower().lstrip('.')
        mime = {'jpg': 'jpeg', 'jpeg': 'jpeg', 'png': 'png', 'webp': 'webp', 'gif': 'gif', 'bmp': 'bmp'}.get(suffix)
        if mime is None or not path.is_file():
            raise RequestError(404, f'example photo {path} is missing or not a jpg/png/webp/gif/bmp file')
        data = base64.b64encode(path.read_bytes()).decode('ascii')
        return dict(image=f'data:image/{mime};base64,{data}', vocabulary=self.example_vocabulary,
                    background=self.example_background)

    def segment(self, request: dict) -> dict:
        """``{"image", "vocabulary", "background"}`` -> the overlay and areas (module doc). The request and the
        image's header are checked first; decoding and segmenting run one request at a time (the lock)."""
        from .inputs import InputError
        from .vocabulary import VocabularyError
        if not isinstance(request, dict):
            raise RequestError(400, 'the request body must be a JSON object {"image": ..., "vocabulary": ...}')
        unknown = sorted(set(request) - {'image', 'vocabulary', 'background'})
        if unknown:
            raise RequestError(400, f'unknown request keys {unknown}; expected image, vocabulary, background')
        raw, _ = read_image_header(request.get('image'), self.max_pixels)     # header only: nothing decoded yet
        classes = split_vocabulary(request.get('vocabulary'))
        if not classes:
            raise RequestError(400, 'the vocabulary is empty: type class names separated by commas, e.g. "cat, dog"')
        background = request.get('background')
        if background is not None and not isinstance(background, str):
            raise RequestError(400, f'"background" must be a class name or null, got {type(background).__name__}')
        if background is not None:
            background = background.strip() or None         # an empty field means no background class
        with self._lock:                                     # one decoded image and one segmentation at a time
            start = time.perf_counter()
            image = decode_image(raw, self.max_pixels)
            del raw
            try:
                result = self.segmenter(image, classes, background=background)
                areas = result.areas()
                overlay = result.overlay()
                overlay = png_data_url(with_band(overlay) if self.random_weights else overlay)
            except (VocabularyError, InputError) as err:     # the segmenter's own checks of the request
                raise RequestError(400, str(err)) from err
            seconds = time.perf_counter() - start
        return dict(class_names=list(result.class_names), background=result.background,
                    areas=[[name, float(fraction)] for name, fraction in areas.items()],
                    overlay=overlay, width=int(image.shape[1]), height=int(image.shape[0]), seconds=seconds,
                    **self._flag())


    @property
    def explorer(self):
        """The attention explorer (built on first use when given as a factory); None: the server has none."""
        if callable(self._explorer) and not hasattr(self._explorer, 'token_of'):
            self._explorer = self._explorer()
        return self._explorer

    def attention(self, request: dict) -> dict:
        """``{"image", "click": [x, y], "shown": [width, height]}`` -> the explorer's maps at the clicked pixel
        (module doc). The click is checked against the shown size before the image is decoded."""
        from .attention import PointError, page_to_pixel
        from .inputs import InputError
        if not isinstance(request, dict):
            raise RequestError(400, 'the request body must be a JSON object {"image", "click", "shown"}')
        unknown = sorted(set(request) - {'image', 'click', 'shown'})
        if unknown:
            raise RequestError(400, f'unknown request keys {unknown}; expected image, click, shown')
        pairs = [request.get(key) for key in ('click', 'shown')]
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                for v in p) for p in pairs):
            raise RequestError(400, '"click" and "shown" must be [x, y] and [width, height] numbers (page pixels)')
        (cx, cy), shown = pairs
        raw, (width, height) = read_image_header(request.get('image'), self.max_pixels)
        try:
            x, y = page_to_pixel(cx, cy, shown, (height, width))
        except PointError as err:
            raise RequestError(400, str(err)) from err
        with self._lock:
            explorer = self.explorer
            if explorer is None:
                raise RequestError(404, 'this server has no attention explorer')
            image = decode_image(raw, self.max_pixels)
            del raw
            try:
                maps = explorer(image, [(x, y)], random_weights=self.random_weights)
                figure = maps.figure(note=RANDOM_WEIGHTS_BAND if self.random_weights else None)
            except (PointError, InputError) as err:
                raise RequestError(400, str(err)) from err
        return dict(point=[float(x), float(y)], token=list(maps.tokens[0]), grid=list(maps.grid),
                    panels=list(maps.panels), figure=png_data_url(figure), **self._flag())


def segmenter_explorer(segmenter):
    """The page's attention explorer around an :class:`OpenVocabSegmenter`'s own tower (no second copy)."""
    from .attention import AttentionExplorer
    return AttentionExplorer.from_backbone(segmenter.model.backbone, segmenter.device, segmenter.precision)


def default_example_image() -> Optional[str]:
    """The first sample VOC photo when ``tools/fetch_sample_data.py`` has laid it out, else None."""
    from ..datasets.sample_data import DEFAULT_ROOT, VOC_IDS
    path = DEFAULT_ROOT / 'voc' / 'JPEGImages' / f'{VOC_IDS[0]}.jpg'
    return str(path) if path.is_file() else None


def _pixels(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a pixel count such as 40000000 or 40e6, got {text!r}') from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be positive, got {text}')
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='declip-mm serve',
        description='A local web page for open-vocabulary segmentation: upload an image, type a vocabulary, see the '
                    'overlay and the area of every class. Needs real weights (--backbone and --text-weights), or '
                    '--random-weights to try the page with random towers (the page then says so). '
                    'See docs/inference.md, "A web page".')
    parser.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT, help=f'port (default {DEFAULT_PORT}; 0 = any free)')
    parser.add_argument('--model-name', default=None, help="open_clip model of the weights, e.g. EVA02-B-16 (default: "
                                                           "OpenVocabSegmenter's, the tiny random test preset)")
    parser.add_argument('--backbone', default=None, help='DeCLIP backbone weights file (or an open_clip tag)')
    parser.add_argument('--text-weights', default=None, help="the text tower's ORIGINAL CLIP weights (tag or file)")
    parser.add_argument('--random-weights', action='store_true',
                        help='serve randomly initialised towers where no weights are given (the page, /api/info and '
                             'every answer say so); without it, missing weights are an error')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1, ...')
    parser.add_argument('--precision', default=None, choices=['auto', 'fp32', 'bf16', 'fp16'])
    parser.add_argument('--example-image', default=None, help='the photo /?example=1 segments (default: the first '
                                                              'sample VOC photo, when laid out)')
    parser.add_argument('--example-vocabulary', default=EXAMPLE_VOCABULARY)
    limits = parser.add_argument_group('limits (docs/inference.md)')
    limits.add_argument('--max-upload-mb', type=_positive(float), default=DEFAULT_MAX_UPLOAD_MB,
                        help=f'largest request body in MB (default {DEFAULT_MAX_UPLOAD_MB:g})')
    limits.add_argument('--max-pixels', type=_pixels, default=DEFAULT_MAX_PIXELS,
                        help=f'largest image, width x height, read from its header before decoding (default '
                             f'{DEFAULT_MAX_PIXELS:.0e} = {DEFAULT_MAX_PIXELS // 10 ** 6} MP)')
    limits.add_argument('--allowed-hosts', action='append', default=[], metavar='NAMES',
                        help='comma-separated host names / addresses the server answers besides the bound address, '
                             'localhost, 127.0.0.1 and [::1] (a request with another Host header gets 403); '
                             'repeatable')
    limits.add_argument('--timeout', type=_positive(float), default=DEFAULT_TIMEOUT,
                        help=f'seconds a connection may send nothing before it is dropped (default '
                             f'{DEFAULT_TIMEOUT:g})')
    limits.add_argument('--request-timeout', type=_positive(float), default=DEFAULT_REQUEST_TIMEOUT,
                        help=f'seconds for a whole request to arrive (default {DEFAULT_REQUEST_TIMEOUT:g})')
    limits.add_argument('--max-connections', type=_positive(int), default=DEFAULT_MAX_CONNECTIONS,
                        help=f'open connections at once (default {DEFAULT_MAX_CONNECTIONS}; 503 beyond)')
    limits.add_argument('--max-queued', type=_positive(int), default=DEFAULT_MAX_QUEUED,
                        help=f'uploads held at once, the one being segmented included (default {DEFAULT_MAX_QUEUED}; '
                             '503 beyond)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f'--port must be 0..65535, got {args.port}')
    if args.example_image is not None and not Path(args.example_image).is_file():
        parser.error(f'--example-image {args.example_image}: no such file')
    args.allowed_hosts = [name.strip() for names in args.allowed_hosts for name in names.split(',') if name.strip()]
    return args


def weights_problem(args) -> Optional[str]:
    """None when the weights are given, or random towers were asked for; else what to pass (one line)."""
    missing = [flag for flag, value in (('--backbone', args.backbone), ('--text-weights', args.text_weights))
               if value is None]
    if missing and not args.random_weights:
        return (f"no weights: pass {' and '.join(missing)} (weights are never downloaded), or --random-weights to "
                'serve random towers whose results are noise')
    if not missing and args.random_weights:
        return '--random-weights with --backbone and --text-weights: no tower is random; drop --random-weights'
    return None


WEIGHTS_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt')


def missing_weights_file(args) -> Optional[str]:
    """A --backbone / --text-weights that names a file (a weights suffix or a '/') which is not there -> one line
    (an open_clip tag such as merged2b_s8b_b131k, or hf-hub:org/name from the local Hugging Face cache, is resolved,
    and checked, when the model is built). A folder counts when it holds open_clip weights (its Hugging Face layout)."""
    from ..constants import FOLDER_WEIGHTS_FILES
    for flag, value in (('--backbone', args.backbone), ('--text-weights', args.text_weights)):
        if value is None or value.startswith('hf-hub:'):
            continue
        path = Path(value).expanduser()
        if path.is_dir() and any((path / name).is_file() for name in FOLDER_WEIGHTS_FILES):
            continue
        if (path.suffix.lower() in WEIGHTS_SUFFIXES or '/' in value) and not path.is_file():
            where = ' (it is a folder without open_clip weights)' if path.is_dir() else ''
            return f"{flag} {value}: no such file{where}"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``declip-mm serve``: build the segmenter once, then serve the page until Ctrl-C. Exit status 2 for a usage or
    set-up error (one ``declip-mm serve: error: ...`` line), 1 when the port cannot be had."""
    args = parse_args(argv)
    problem = weights_problem(args) or missing_weights_file(args)
    if problem:
        print(f'declip-mm serve: error: {problem}', file=sys.stderr)
        return 2
    from . import OpenVocabSegmenter
    options = dict(model_name=args.model_name, backbone=args.backbone, text_weights=args.text_weights,
                   device=args.device, precision=args.precision)
    options = {key: value for key, value in options.items() if value is not None}
    print(f'[declip-mm serve] building the segmenter ({options or "defaults"}) ...', file=sys.stderr)
    try:
        segmenter = OpenVocabSegmenter(**options)
    except (OSError, KeyError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        message = ' '.join(str(err).strip('"').split())
        print(f'declip-mm serve: error: cannot build the segmenter: {message}', file=sys.stderr)
        return 2
    description = ', '.join(f'{k}={v}' for k, v in options.items()) or 'OpenVocabSegmenter defaults'
    if args.random_weights:
        description += ' (RANDOM WEIGHTS)'
    service = SegmentationService(segmenter, description, args.example_image or default_example_image(),
                                  args.example_vocabulary, max_pixels=args.max_pixels,
                                  random_weights=args.random_weights, explorer=lambda: segmenter_explorer(segmenter))
    try:
        server = make_server(service, args.host, args.port, args.max_upload_mb, args.allowed_hosts, args.timeout,
                             args.request_timeout, args.max_connections, args.max_queued)
    except OSError as err:
        print(f'[declip-mm serve] cannot listen on {args.host}:{args.port}: {err}', file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    if args.random_weights:
        print(f'[declip-mm serve] WARNING: {RANDOM_WEIGHTS_WARNING}', file=sys.stderr)
    if not is_loopback(args.host):
        print(f'[declip-mm serve] WARNING: listening on {args.host}, so other machines can use this server; '
              'it has no authentication. It answers the Host names '
              f'{", ".join(sorted(server.RequestHandlerClass.allowed_hosts))} (--allowed-hosts adds more)',
              file=sys.stderr)
    print(f'[declip-mm serve] open http://{"127.0.0.1" if host == "0.0.0.0" else host}:{port}/ '
          '(Ctrl-C stops)', file=sys.stderr, flush=True)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop the server, also where the process started with SIGINT ignored (background jobs
        # of a non-interactive shell inherit SIG_IGN, and Python then never raises KeyboardInterrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
