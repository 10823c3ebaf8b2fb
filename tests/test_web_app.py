"""Issue 12 item 4: the local web page (declip_mm/apis/web_app.py). The JSON endpoint over plain HTTP (urllib, the
good request against the segmenter called directly, every bad request a JSON error and the server still up), and
the page itself in headless Chromium: ``/?example=1`` segments the example photo; the screenshot must show the
page and, at the overlay's on-screen box, the overlay's pixels; the DOM must hold the area table of the
vocabulary. Loopback traffic only (the server binds 127.0.0.1; Chromium's other traffic goes to a dead proxy)."""
import base64
import io
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.apis.web_app import SegmentationService, main, make_server, split_vocabulary

VOCABULARY = 'person; people, bicycle, car, sky; clouds, tree'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.fixture(scope='module')
def segmenter():
    from declip_mm.apis import OpenVocabSegmenter
    torch.manual_seed(0)
    return OpenVocabSegmenter(model_name='DeCLIP-Tiny-ViT-16', backbone=None, text_weights=None, device='cpu',
                              precision='fp32')


@pytest.fixture(scope='module')
def photo(sample_root):
    return sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[0]


def serve(service, **kwargs):
    server = make_server(service, '127.0.0.1', 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f'http://127.0.0.1:{server.server_address[1]}'


@pytest.fixture(scope='module')
def url(segmenter, photo):
    server, address = serve(SegmentationService(segmenter, 'DeCLIP-Tiny-ViT-16 (random)', str(photo), VOCABULARY),
                            max_upload_mb=1.0)
    yield address
    server.shutdown()
    server.server_close()


def post(url, payload, raw: bytes = None):
    """(status, JSON answer) of POST /api/segment."""
    body = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url + '/api/segment', data=body, headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def data_url(path_or_bytes, mime='image/jpeg'):
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return f'data:{mime};base64,' + base64.b64encode(raw).decode()


def decode_png(url_text):
    assert url_text.startswith('data:image/png;base64,')
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url_text.split(',', 1)[1]))).convert('RGB'))


def expected(segmenter, image_path, classes, background=None):
    from declip_mm.apis.inputs import load_image
    result = segmenter(load_image(image_path), classes, background=background)
    return result, np.asarray(result.overlay().convert('RGB'))


# ------------------------------------------------------------------ the JSON endpoint
def test_the_page_and_the_info_are_served(url):
    with urllib.request.urlopen(url + '/', timeout=30) as answer:
        page = answer.read().decode()
        assert answer.headers['Content-Type'].startswith('text/html')
    for element in ('id="image"', 'id="vocabulary"', 'id="background"', 'id="overlay"', 'id="areas"', 'id="error"'):
        assert element in page
    with urllib.request.urlopen(url + '/api/info', timeout=30) as answer:
        assert json.loads(answer.read()) == dict(model='DeCLIP-Tiny-ViT-16 (random)')


def test_segment_request_returns_the_segmenters_overlay_and_areas(url, segmenter, photo):
    status, answer = post(url, dict(image=data_url(photo), vocabulary=VOCABULARY, background=None))
    assert status == 200, answer
    result, overlay = expected(segmenter, photo, split_vocabulary(VOCABULARY))
    assert answer['class_names'] == list(result.class_names) == ['person', 'bicycle', 'car', 'sky', 'tree']
    assert answer['background'] is None
    assert answer['areas'] == [[k, v] for k, v in result.areas().items()]
    assert sum(v for _, v in answer['areas']) == pytest.approx(1.0)
    assert np.array_equal(decode_png(answer['overlay']), overlay)
    w, h = Image.open(photo).size
    assert (answer['width'], answer['height']) == (w, h)
    # plain base64 (no data URL) and a named background, which is not in the vocabulary: a new last class
    status, answer = post(url, dict(image=base64.b64encode(photo.read_bytes()).decode(), vocabulary='car, tree',
                                    background='background'))
    assert status == 200, answer
    assert answer['class_names'] == ['car', 'tree', 'background'] and answer['background'] == 'background'
    result, overlay = expected(segmenter, photo, ['car', 'tree'], background='background')
    assert answer['areas'] == [[k, v] for k, v in result.areas().items()]
    assert np.array_equal(decode_png(answer['overlay']), overlay)


def test_one_word_grayscale_and_rgba_uploads(url, photo):
    img = Image.open(photo)
    for mode, fmt in (('L', 'PNG'), ('RGBA', 'PNG'), ('I;16', 'PNG')):
        buffer = io.BytesIO()
        (img.convert(mode) if mode != 'I;16' else Image.fromarray(np.asarray(img.convert('L'), np.uint16) * 257)
         ).save(buffer, format=fmt)
        status, answer = post(url, dict(image=data_url(buffer.getvalue(), 'image/png'), vocabulary='cat'))
        assert status == 200, (mode, answer)
        assert answer['class_names'] == ['cat'] and answer['areas'] == [['cat', 1.0]]
        assert decode_png(answer['overlay']).shape[1] == img.size[0]


def test_a_vocabulary_naming_a_file_is_not_read(url, photo, tmp_path):
    secret = tmp_path / 'classes.txt'
    secret.write_text('private\nlines\n')
    status, answer = post(url, dict(image=data_url(photo), vocabulary=str(secret)))
    assert status == 200, answer
    assert answer['class_names'] == [str(secret)]


@pytest.mark.parametrize('payload, status, message', [
    (dict(vocabulary='cat'), 400, 'no image in the request'),
    (dict(image='', vocabulary='cat'), 400, 'no image in the request'),
    (dict(image='data:image/png;base64,%%%notbase64', vocabulary='cat'), 400, 'not valid base64'),
    (dict(image=data_url(b'this is not an image at all'), vocabulary='cat'), 400, 'not an image PIL can read'),
    (dict(image='JPEG', vocabulary=''), 400, None),                         # 'JPEG' is set to a truncated JPEG below
    (dict(image='PHOTO', vocabulary=''), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO', vocabulary=' , ,\n'), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO'), 400, 'the vocabulary is empty'),
    (dict(image='PHOTO', vocabulary='cat, dog, Cat'), 400, "'Cat' is given twice"),
    (dict(image='PHOTO', vocabulary='cat, sofa; couch, couch'), 400, "'couch' is given twice"),
    (dict(image='PHOTO', vocabulary='cat,,dog'), 400, 'empty name'),
    (dict(image='PHOTO', vocabulary='cat', background='a, b'), 400, 'background must be one class name'),
    (dict(image='PHOTO', vocabulary=['cat']), 400, '"vocabulary" must be a string'),
    (dict(image='PHOTO', vocabulary='cat', colour='red'), 400, "unknown request keys ['colour']"),
])
def test_bad_requests_answer_a_json_error(url, photo, payload, status, message):
    jpeg = photo.read_bytes()
    payload = {k: (data_url(photo) if v == 'PHOTO' else data_url(jpeg[:len(jpeg) // 3]) if v == 'JPEG' else v)
               for k, v in payload.items()}
    if message is None:                                                     # the truncated JPEG
        message = 'cannot decode the uploaded image'
        payload['vocabulary'] = 'cat'
    got_status, answer = post(url, payload)
    assert got_status == status and message in answer['error'], answer
    assert post(url, dict(image=data_url(photo), vocabulary='cat'))[0] == 200     # still serving


def test_malformed_http_requests(url, photo):
    status, answer = post(url, None, raw=b'{"image": ')
    assert status == 400 and 'not JSON' in answer['error']
    status, answer = post(url, None, raw=b'[1, 2]')
    assert status == 400 and 'JSON object' in answer['error']
    big = json.dumps(dict(image='A' * (1_100_000), vocabulary='cat')).encode()
    status, answer = post(url, None, raw=big)
    assert status == 413 and 'at most 1.0 MB' in answer['error']
    for path, method in (('/nothing', 'GET'), ('/api/other', 'POST')):
        request = urllib.request.Request(url + path, data=b'{}' if method == 'POST' else None, method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 404 and 'error' in json.loads(err.value.read())
    assert post(url, dict(image=data_url(photo), vocabulary='cat'))[0] == 200


def test_a_failing_segmenter_answers_500_and_the_server_survives(photo):
    calls = []

    def failing(image, classes, background=None):
        calls.append(classes)
        raise RuntimeError('out of memory on the device')
    server, address = serve(SegmentationService(failing, 'failing'))
    try:
        for _ in range(2):
            status, answer = post(address, dict(image=data_url(photo), vocabulary='cat'))
            assert status == 500 and 'RuntimeError: out of memory on the device' in answer['error']
        with pytest.raises(urllib.error.HTTPError) as err:                 # no example photo on this server
            urllib.request.urlopen(address + '/api/example', timeout=30)
        assert err.value.code == 404 and '--example-image' in json.loads(err.value.read())['error']
    finally:
        server.shutdown()
        server.server_close()
    assert calls == [['cat'], ['cat']]


def test_command_line_checks(tmp_path, capsys):
    for argv, message in ((['--port', '70000'], '--port must be 0..65535'),
                          (['--example-image', str(tmp_path / 'none.jpg')], 'no such file'),
                          (['--precision', 'fp8'], "invalid choice: 'fp8'")):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_one_command_starts_the_server(photo):
    """``python -m declip_mm.apis.web_app`` (what ``declip-mm serve`` runs): builds the model, prints the address,
    serves the page and the example until Ctrl-C, also when started with SIGINT ignored (as under CI)."""
    import signal as _signal
    previous = _signal.signal(_signal.SIGINT, _signal.SIG_IGN)   # the child inherits SIG_IGN, as from a background shell
    import os
    import signal
    import sys
    command = [sys.executable, '-m', 'declip_mm.apis.web_app', '--port', '0', '--model-name', 'DeCLIP-Tiny-ViT-16',
               '--device', 'cpu', '--precision', 'fp32', '--example-image', str(photo)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get('PYTHONPATH', '')]))
    try:
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    finally:
        _signal.signal(_signal.SIGINT, previous)
    try:
        address = None
        for line in proc.stderr:                                           # until the server says where it is
            if line.startswith('[declip-mm serve] open http://'):
                address = line.split('open ', 1)[1].split('/ ', 1)[0]
                break
        assert address and address.startswith('http://127.0.0.1:'), 'the server did not start'
        with urllib.request.urlopen(address + '/api/info', timeout=30) as answer:
            assert 'DeCLIP-Tiny-ViT-16' in json.loads(answer.read())['model']
        with urllib.request.urlopen(address + '/api/example', timeout=30) as answer:
            example = json.loads(answer.read())
        assert base64.b64decode(example['image'].split(',', 1)[1]) == photo.read_bytes()
        assert post(address, dict(image=example['image'], vocabulary=example['vocabulary']))[0] == 200
    finally:
        # keep reading the server's log so a full pipe can never block its exit; generous time on loaded CI cores
        import threading
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=180) == 0
        finally:
            if proc.poll() is None:      # never leave a server behind
                proc.kill()


# ------------------------------------------------------------------ the page in headless Chromium
class PageParser(HTMLParser):
    """The parts of the dumped DOM the tests read: body attributes, the overlay img, the area rows, the error text."""

    def __init__(self):
        super().__init__()
        self.body, self.overlay, self.rows, self.error, self.error_style = {}, {}, [], '', ''
        self._in_row = self._in_error = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'body':
            self.body = attrs
        elif tag == 'img' and attrs.get('id') == 'overlay':
            self.overlay = attrs
        elif tag == 'tr' and 'data-name' in attrs:
            self.rows.append(dict(name=attrs['data-name'], fraction=float(attrs['data-fraction']), cells=[]))
            self._in_row = True
        elif tag == 'div' and attrs.get('id') == 'error':
            self._in_error = True
            self.error_style = attrs.get('style', '')

    def handle_endtag(self, tag):
        if tag == 'tr':
            self._in_row = False
        if tag == 'div':
            self._in_error = False

    def handle_data(self, data):
        if self._in_row and data.strip():
            self.rows[-1]['cells'].append(data.strip())
        if self._in_error:
            self.error += data


def open_in_chromium(page_url, tmp_path, width=1200, height=1100):
    """Load ``page_url`` in headless Chromium until the page is idle: (DOM parser, screenshot (H, W, 3))."""
    if CHROMIUM is None:
        pytest.skip('chromium is not installed (Debian: apt-get install -y chromium)')
    shot = tmp_path / 'page.png'
    command = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--hide-scrollbars',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               '--disable-default-apps', '--disable-extensions', '--proxy-server=127.0.0.1:9',   # no traffic out
               f'--user-data-dir={tmp_path / "profile"}', f'--window-size={width},{height}',
               '--force-device-scale-factor=1', '--virtual-time-budget=60000', '--dump-dom',
               f'--screenshot={shot}', page_url]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    parser = PageParser()
    parser.feed(proc.stdout)
    return parser, np.asarray(Image.open(shot).convert('RGB'))


def test_the_page_segments_the_example_in_chromium(url, segmenter, photo, tmp_path):
    dom, shot = open_in_chromium(url + '/?example=1', tmp_path)
    assert dom.body.get('data-state') == 'done', (dom.body, dom.error)
    # the page loaded: the header bar's colour across the top of the screenshot
    header = np.abs(shot[5:40].astype(int) - (0x1f, 0x4e, 0x8c)).sum(-1) <= 3
    assert header.mean() > 0.8
    result, overlay = expected(segmenter, photo, split_vocabulary(VOCABULARY))
    assert np.array_equal(decode_png(dom.overlay['src']), overlay)
    left, top, w, h = (int(v) for v in dom.overlay['data-rect'].split(','))
    assert (h, w) == overlay.shape[:2] and top + h <= shot.shape[0], 'the overlay must be on screen at natural size'
    shown = shot[top:top + h, left:left + w].astype(int)
    assert np.abs(shown - overlay).mean() < 1.0                           # the overlay's pixels, where the DOM says
    photo_rgb = np.asarray(Image.open(photo).convert('RGB')).astype(int)
    assert np.abs(shown[:photo_rgb.shape[0]] - photo_rgb).mean() > 10     # an overlay, not the bare photo
    assert [r['name'] for r in dom.rows] == list(result.areas()) == ['person', 'bicycle', 'car', 'sky', 'tree']
    for row, (name, fraction) in zip(dom.rows, result.areas().items()):
        assert row['fraction'] == pytest.approx(fraction, abs=1e-12)
        assert row['cells'] == [name, f'{100 * fraction:.1f} %']


def test_the_page_shows_a_bad_requests_error_in_chromium(url, tmp_path):
    dom, shot = open_in_chromium(url + '/?example=1&vocabulary=cat,dog,cat', tmp_path)
    assert dom.body.get('data-state') == 'error'
    assert "'cat' is given twice" in dom.error and 'display: block' in dom.error_style
    assert dom.rows == []
    error_box = np.abs(shot.astype(int) - (0xfd, 0xec, 0xee)).sum(-1) <= 3
    assert error_box.sum() > 2000                                          # the error box is on screen
