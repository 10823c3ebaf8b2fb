"""Users' inputs. Vocabulary parsing, the precision rule on fake CPU flag strings, every image
format (grayscale, RGBA, 16-bit, palette, CMYK, EXIF-rotated), corrupt files, input collection, video sampling,
and the image-size rules."""
import cv2
import numpy as np
import pytest
from PIL import Image

from declip_mm.apis.image_size import ImageSizeError, output_size, segmentation_input_size
from declip_mm.apis.inputs import (InputError, as_rgb_image, collect_inputs, load_image, load_segment_ids,
                                   unique_name, video_frames, video_sample_count)
from declip_mm.apis.precision import cpu_runs_bf16_fast, read_cpu_flags, resolve_precision
from declip_mm.apis.vocabulary import VocabularyError, parse_vocabulary

AVX2_ONLY = 'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2'
AVX512_BF16 = AVX2_ONLY + ' avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bf16'
AMX = AVX2_ONLY + ' avx512f avx512bw amx_bf16 amx_tile amx_int8'
AVX512_NO_BF16 = AVX2_ONLY + ' avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni'


# ------------------------------------------------------------------ vocabulary
def test_one_word_vocabulary_is_a_class_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    v = parse_vocabulary('cat')
    assert v.classes == ['cat'] and v.names == ['cat'] and v.background_index is None
    (tmp_path / 'cat').write_text('tabby cat\nsiamese cat\n')          # a file of that name exists: it is read
    assert parse_vocabulary('cat').classes == ['tabby cat', 'siamese cat']


def test_vocabulary_forms():
    v = parse_vocabulary(' cat , dog,sofa; couch ')
    assert v.classes == ['cat', 'dog', 'sofa; couch'] and v.names == ['cat', 'dog', 'sofa']
    assert parse_vocabulary(['cat', 'sofa ;couch']).classes == ['cat', 'sofa; couch']
    voc = parse_vocabulary('bundled:voc21')
    assert len(voc) == 21 and voc.background_index is None              # class 0 is not background by position
    with pytest.raises(VocabularyError, match='no bundled vocabulary'):
        parse_vocabulary('bundled:nope')


def test_one_package_holds_every_bundled_list():
    """declip_mm/vocabularies: the training-free lists and CAT-Seg's, one finder for both; the old loaders' names
    (models, datasets) are the same functions, with their rules."""
    from declip_mm import vocabularies as v
    from declip_mm.datasets.label_folder import catseg_vocabulary
    from declip_mm.datasets.ov_detection import class_names_from
    from declip_mm.apis.vocabulary import read_vocabulary_spec
    from declip_mm.models.text.vocabulary import load_class_names
    assert v.bundled() == ['ade20k', 'cityscapes', 'coco_object', 'coco_panoptic', 'coco_stuff', 'lvis_v1', 'pc59',
                           'pc60', 'voc20', 'voc21']
    assert v.bundled('catseg') == ['ade150', 'ade847', 'coco', 'pc459', 'pc59', 'voc20', 'voc20b']
    assert catseg_vocabulary is v.catseg_vocabulary and load_class_names is v.load_class_names
    for name in v.bundled():
        assert v.load_bundled(name) == load_class_names(name) == read_vocabulary_spec(f'bundled:{name}')
    assert class_names_from('lvis_v1') == v.load_bundled('lvis_v1')
    assert v.load_bundled('ade847', 'catseg')[1] == 'building, edifice' and catseg_vocabulary('ade847')[1] == 'building'
    with pytest.raises(FileNotFoundError, match="no bundled catseg list 'nope'"):
        v.load_bundled('nope', 'catseg')
    assert v.bundled_file('../catseg/ade150') is None and v.bundled_file('voc21') == v.CLASS_NAME_DIR / 'voc21.txt'


def test_vocabulary_files(tmp_path):
    lines = tmp_path / 'classes.txt'
    lines.write_text('# my classes\ncat\n\nsofa; couch\n')
    assert parse_vocabulary(str(lines)).classes == ['cat', 'sofa; couch']
    one_line = tmp_path / 'one.txt'
    one_line.write_text('cat,dog\n')
    assert parse_vocabulary(str(one_line)).classes == ['cat', 'dog']
    with pytest.raises(VocabularyError, match='vocabulary file not found'):
        parse_vocabulary(str(tmp_path / 'missing.txt'))
    with pytest.raises(VocabularyError, match='vocabulary file not found'):
        parse_vocabulary('classes.txt')                                   # looks like a path, does not exist here
    with pytest.raises(VocabularyError, match='folder'):
        parse_vocabulary(str(tmp_path))
    empty = tmp_path / 'empty.txt'
    empty.write_text('# nothing\n')
    with pytest.raises(VocabularyError, match='empty'):
        parse_vocabulary(str(empty))


@pytest.mark.parametrize('spec, message', [
    ('', 'empty'), (' , ,', 'empty'), ([], 'empty'), ('cat,,dog', 'class 2'), ('cat; ,dog', 'empty name'),
    ('cat,dog,cat', "'cat' is given twice"), ('sofa; couch,couch', "class 1, 'sofa'"),
    ('Cat,cat', 'twice'), ('big  dog,Big dog', 'twice'), ('cat; cat', 'twice')])
def test_bad_vocabularies_are_clear_errors(spec, message):
    with pytest.raises(VocabularyError, match=message):
        parse_vocabulary(spec)


def test_background_is_named_never_positional():
    assert parse_vocabulary('background,cat').background_index is None
    v = parse_vocabulary('cat,dog', background='background')
    assert v.classes == ['cat', 'dog', 'background'] and v.background_index == 2 and v.background == 'background'
    v = parse_vocabulary('cat,sky; wall,dog', background='WALL')       # a synonym of a class names that class
    assert v.classes == ['cat', 'sky; wall', 'dog'] and v.background_index == 1 and v.background == 'sky'
    for bad in ('', 'a,b', 'a; b'):
        with pytest.raises(VocabularyError, match='background'):
            parse_vocabulary('cat', background=bad)


# ------------------------------------------------------------------ precision
def test_auto_precision_on_fake_cpu_flags(tmp_path):
    assert not cpu_runs_bf16_fast(AVX2_ONLY) and not cpu_runs_bf16_fast(AVX512_NO_BF16)
    assert cpu_runs_bf16_fast(AVX512_BF16) and cpu_runs_bf16_fast(AMX)
    assert not cpu_runs_bf16_fast('avx512_bf16x')                        # whole flags only
    assert resolve_precision('auto', 'cpu', AVX2_ONLY) == 'fp32'
    assert resolve_precision('auto', 'cpu', AVX512_NO_BF16) == 'fp32'
    assert resolve_precision('auto', 'cpu', AVX512_BF16) == 'bf16'
    assert resolve_precision('auto', 'cpu', AMX) == 'bf16'
    assert resolve_precision('auto', 'cpu', '') == 'fp32'
    assert resolve_precision('bf16', 'cpu', AVX2_ONLY) == 'bf16'         # an explicit choice is honoured
    assert resolve_precision('fp32', 'cpu', AMX) == 'fp32'
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve_precision('int8', 'cpu')
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(f'processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: {AVX512_BF16}\n\nprocessor\t: 1\n')
    assert read_cpu_flags(str(cpuinfo)).split() == AVX512_BF16.split()
    assert read_cpu_flags(str(tmp_path / 'none')) == ''


# ------------------------------------------------------------------ image formats
@pytest.fixture(scope='module')
def photo(sample_root):
    return np.array(Image.open(sample_root / 'voc/JPEGImages/2011_000003.jpg').convert('RGB'))


def test_grayscale_rgba_palette_cmyk(tmp_path, photo):
    gray = (photo.mean(-1)).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / 'gray.png')
    out = load_image(tmp_path / 'gray.png')
    assert out.shape == (*gray.shape, 3) and out.dtype == np.uint8 and (out == gray[..., None]).all()

    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:50, :60, 3] = 0                                                   # transparent corner: white
    rgba[50:100, :60, 3] = 128
    Image.fromarray(rgba).save(tmp_path / 'rgba.png')
    out = load_image(tmp_path / 'rgba.png')
    assert (out[:50, :60] == 255).all() and (out[100:] == photo[100:]).all()
    half = np.round(photo[50:100, :60] * (128 / 255) + 255 * (1 - 128 / 255)).astype(np.uint8)
    assert np.abs(out[50:100, :60].astype(int) - half).max() <= 1

    pal = Image.fromarray(photo).quantize(16)
    pal.save(tmp_path / 'pal.png')
    assert (load_image(tmp_path / 'pal.png') == np.array(pal.convert('RGB'))).all()

    Image.fromarray(photo).convert('CMYK').save(tmp_path / 'cmyk.jpg')
    out = load_image(tmp_path / 'cmyk.jpg')
    assert out.shape == photo.shape and np.abs(out.astype(int) - photo).mean() < 12

    la = Image.fromarray(gray).convert('LA')
    la.save(tmp_path / 'la.png')
    assert (load_image(tmp_path / 'la.png') == gray[..., None]).all()


def test_16_bit_images(tmp_path, photo):
    gray16 = (photo[..., 0].astype(np.uint16) * 257 + 100).clip(0, 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'g16.png'), gray16)
    assert Image.open(tmp_path / 'g16.png').mode.startswith('I')
    out = load_image(tmp_path / 'g16.png')
    expected = np.round(gray16 * (255 / 65535)).astype(np.uint8)
    assert out.shape == (*gray16.shape, 3) and (out[..., 0] == expected).all() and (out[..., 2] == expected).all()

    rgb16 = photo.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / 'c16.png'), rgb16[..., ::-1])               # OpenCV writes BGR
    out = load_image(tmp_path / 'c16.png')
    assert out.shape == photo.shape and np.abs(out.astype(int) - photo).max() <= 1

    assert (as_rgb_image(np.full((4, 5), 65535, np.uint16)) == 255).all()
    assert (as_rgb_image(np.full((4, 5, 3), 0.5, np.float32)) == 128).all()
    with pytest.raises(InputError, match='NaN'):
        as_rgb_image(np.full((4, 5), np.nan))
    with pytest.raises(InputError, match='shape'):
        as_rgb_image(np.zeros((4, 5, 7), np.uint8))


def test_exif_orientation_is_applied(tmp_path, photo):
    img = Image.fromarray(photo)
    exif = Image.Exif()
    exif[0x0112] = 6                                                         # "rotate 90 CW to display"
    img.save(tmp_path / 'rot.jpg', exif=exif.tobytes(), quality=95)
    stored = np.array(Image.open(tmp_path / 'rot.jpg'))                     # the pixels as stored
    out = load_image(tmp_path / 'rot.jpg')
    assert out.shape == (photo.shape[1], photo.shape[0], 3)
    assert (out == np.rot90(stored, k=-1)).all()
    img.save(tmp_path / 'plain.jpg', quality=95)
    assert (load_image(tmp_path / 'plain.jpg') == np.array(Image.open(tmp_path / 'plain.jpg'))).all()


def test_corrupt_files_raise_input_error(tmp_path, sample_root):
    (tmp_path / 'noise.jpg').write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / 'text.png').write_text('not an image')
    data = (sample_root / 'voc/JPEGImages/2011_000003.jpg').read_bytes()
    (tmp_path / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.jpg').write_bytes(b'')
    for name in ('noise.jpg', 'text.png', 'truncated.jpg', 'empty.jpg'):
        with pytest.raises(InputError, match=name):
            load_image(tmp_path / name)
    with pytest.raises(InputError, match='no such file'):
        load_image(tmp_path / 'absent.jpg')


# ------------------------------------------------------------------ collecting inputs
def test_collect_inputs(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name in ('b.jpg', 'a.PNG', 'c.mp4', 'notes.txt'):
        (folder / name).write_bytes(b'x')
    (folder / 'sub').mkdir()
    files = collect_inputs([str(folder), str(folder / 'a.PNG'), str(tmp_path / 'photos' / '*.jpg')])
    assert [p.name for p in files] == ['a.PNG', 'b.jpg', 'c.mp4']            # sorted, each once, no .txt
    assert [p.name for p in collect_inputs([str(folder / 'notes.txt')])] == ['notes.txt']   # named: tried
    with pytest.raises(InputError, match='no such file or folder'):
        collect_inputs([str(tmp_path / 'nope.jpg')])
    with pytest.raises(InputError, match='matches no file'):
        collect_inputs([str(tmp_path / '*.webp')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match='holds no image'):
        collect_inputs([str(tmp_path / 'empty')])
    with pytest.raises(InputError, match='no input'):
        collect_inputs([])
    taken = set()
    assert [unique_name(s, taken) for s in ('a', 'a', 'b', 'a')] == ['a', 'a_1', 'b', 'a_2']


def write_video(path, frames=25, fps=10.0, size=(64, 48)):
    """An MJPG AVI whose frame i is uniformly grey level 10 * i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 10 * i, np.uint8))
    writer.release()
    return path


def test_video_sampling(tmp_path):
    video = write_video(tmp_path / 'clip.avi')
    got = list(video_frames(video, fps=2.0))
    assert [i for i, _, _ in got] == [0, 5, 10, 15, 20]
    assert np.allclose([t for _, t, _ in got], [0.0, 0.5, 1.0, 1.5, 2.0])
    for i, _, frame in got:
        assert frame.shape == (48, 64, 3) and abs(float(frame.mean()) - 10 * i) < 3
    assert video_sample_count(video, 2.0) == 5
    assert [i for i, _, _ in video_frames(video, fps=100.0)] == list(range(25))   # above the native rate: all
    (tmp_path / 'bad.mp4').write_bytes(b'\x00' * 100)
    with pytest.raises(InputError, match='bad.mp4'):
        list(video_frames(tmp_path / 'bad.mp4'))
    with pytest.raises(InputError, match='fps'):
        list(video_frames(video, fps=0))


def test_segment_id_pngs(tmp_path):
    ids = np.zeros((6, 8), np.uint16)
    ids[1:3, 2:5] = 300
    Image.fromarray(ids).save(tmp_path / 'ids16.png')
    assert (load_segment_ids(tmp_path / 'ids16.png', (6, 8)) == ids).all()
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / 'pan.png')
    assert load_segment_ids(tmp_path / 'pan.png', (6, 8))[0, 0] == 1 + 2 * 256 + 3 * 65536
    with pytest.raises(InputError, match='size'):
        load_segment_ids(tmp_path / 'ids16.png', (8, 6))


# ------------------------------------------------------------------ image sizes
def test_segmentation_input_size_rules():
    import mmcv
    for h, w in ((375, 500), (500, 333), (3000, 4000), (20, 30), (448, 448)):
        expected = mmcv.rescale_size((w, h), (4096, 448))                   # the benchmark pipeline's Resize
        assert segmentation_input_size(h, w) == (expected[1], expected[0]), (h, w)
    assert segmentation_input_size(20, 30) == (448, 672)                    # smaller than a window: scaled up
    h, w = segmentation_input_size(100, 5000)                               # 50:1 -> short side 224, long side tiled
    assert (h, w) == (224, 11200)
    assert segmentation_input_size(100, 1800) == (228, 4096)                # 18:1: the benchmark rule still
    assert segmentation_input_size(100, 1900) == (224, 4256)                # 19:1 > 4096/224: short side 224
    with pytest.raises(ImageSizeError, match='aspect ratio of 100:1'):
        segmentation_input_size(10, 1000)
    assert output_size(3000, 4000, 4_000_000) == (1732, 2309)
    assert output_size(300, 400, 4_000_000) == (300, 400) and output_size(3000, 4000, 0) == (3000, 4000)


def test_output_size_respects_the_memory_budget():
    from declip_mm.apis.image_size import MAX_OUTPUT_VALUES
    h, w = output_size(3000, 4000, 4_000_000, channels=300)                 # 300 queries: 0.89 MP
    assert h * w <= MAX_OUTPUT_VALUES // 300 and abs(h / w - 0.75) < 0.01
    assert output_size(3000, 4000, 4_000_000, channels=3) == (1732, 2309)
    assert output_size(3000, 4000, 0, channels=300) == (3000, 4000)
