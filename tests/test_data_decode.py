"""JPEG decoding: the libjpeg-turbo (simplejpeg) path gives exactly Pillow's draft pixels, and
falls back to Pillow for what it cannot take."""

import numpy as np
import pytest
from PIL import Image

from rdfer.data import decode
from rdfer.data.decode import load_frame

pytest.importorskip("simplejpeg")


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    # Smooth gradients plus noise: every DCT coefficient and the chroma upsampling matter.
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 97 * 2.6], -1)
    rgb = (rgb + rng.normal(0, 12, rgb.shape)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def _pillow_only(path, size, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(decode, "_simplejpeg", None)
        return load_frame(path, size)


@pytest.mark.parametrize("width,height,size,save", [
    (224, 224, 112, {}),                                  # DFEW: half scale, no resize
    (224, 224, 112, {"subsampling": 0}),                  # 4:4:4
    (224, 224, 112, {"subsampling": 1}),                  # 4:2:2
    (224, 224, 112, {"progressive": True}),
    (300, 200, 112, {}),                                  # scale 1 (200 // 112), then resize
    (500, 460, 112, {}),                                  # scale 4 then resize
    (1000, 990, 112, {}),                                 # scale 8
    (40, 30, 112, {}),                                    # upscaled
    (224, 224, 32, {"mode": "L"}),                        # grayscale -> RGB
])
def test_turbo_path_matches_pillow_draft(tmp_path, monkeypatch, width, height, size, save):
    save = dict(save)
    img = _photo(width, height).convert(save.pop("mode", "RGB"))
    path = tmp_path / "f.jpg"
    img.save(path, quality=90, **save)
    fast = load_frame(path, size)
    assert fast.shape == (size, size, 3) and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, _pillow_only(path, size, monkeypatch))


def test_what_turbo_cannot_take_goes_to_pillow(tmp_path, monkeypatch):
    cmyk = tmp_path / "cmyk.jpg"
    _photo(64, 64).convert("CMYK").save(cmyk, quality=90)
    png_named_jpg = tmp_path / "really_a_png.jpg"
    _photo(64, 64).save(png_named_jpg, format="PNG")
    for path in (cmyk, png_named_jpg):
        assert decode._decode_jpeg_turbo(path, 32) is None
        np.testing.assert_array_equal(load_frame(path, 32), _pillow_only(path, 32, monkeypatch))
    truncated = tmp_path / "truncated.jpg"
    _photo(224, 224).save(truncated, quality=90)
    data = truncated.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    assert decode._decode_jpeg_turbo(truncated, 32) is None  # libjpeg's warning is not a frame
    with pytest.raises(OSError, match="truncated"):  # so Pillow's error reports it, as before
        load_frame(truncated, 32)
