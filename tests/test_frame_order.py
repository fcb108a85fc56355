"""Frame-folder order, pinned on hand cases: numbers compare as numbers wherever they stand in
the name, letters without case, and equal keys fall back to the name so the order never depends
on the file system's listing order."""

import os

from rdfer.data.decode import _natural_key, list_frames


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _names(folder):
    return [os.path.basename(p) for p in list_frames(folder)]


def test_numbers_compare_as_numbers(tmp_path):
    _touch(tmp_path, ["10.jpg", "2.jpg", "1.jpg", "100.jpg", "11.jpg", "0.jpg"])
    assert _names(tmp_path) == ["0.jpg", "1.jpg", "2.jpg", "10.jpg", "11.jpg", "100.jpg"]


def test_zero_padding_and_prefixes(tmp_path):
    _touch(tmp_path, ["frame_00012.jpg", "frame_9.jpg", "frame_010.jpg", "frame_0001.jpg"])
    assert _names(tmp_path) == ["frame_0001.jpg", "frame_9.jpg", "frame_010.jpg", "frame_00012.jpg"]


def test_several_numbers_in_a_name(tmp_path):
    _touch(tmp_path, ["clip10_frame1.jpg", "clip2_frame10.jpg", "clip2_frame9.jpg", "clip1_frame20.jpg"])
    assert _names(tmp_path) == ["clip1_frame20.jpg", "clip2_frame9.jpg", "clip2_frame10.jpg", "clip10_frame1.jpg"]


def test_letters_compare_without_case(tmp_path):
    _touch(tmp_path, ["FRAME_10.jpg", "frame_2.jpg", "Frame_3.JPG"])
    assert _names(tmp_path) == ["frame_2.jpg", "Frame_3.JPG", "FRAME_10.jpg"]


def test_equal_keys_fall_back_to_the_name():
    # "01.jpg" and "1.jpg" have the same numeric key; the name settles it, so the order is the
    # same whatever order the folder lists them in.
    assert _natural_key("01.jpg")[0] == _natural_key("1.jpg")[0] == ["", 1, ".jpg"]
    assert _natural_key("01.jpg") < _natural_key("1.jpg")
    assert sorted(["1.jpg", "01.jpg", "001.jpg"], key=_natural_key) == ["001.jpg", "01.jpg", "1.jpg"]
    assert _natural_key("Frame_007.PNG") == (["frame_", 7, ".png"], "Frame_007.PNG")


def test_only_visible_image_files_are_listed(tmp_path):
    _touch(tmp_path, ["3.JPG", "4.Png", "5.bmp", "6.jpeg", "1.jpg", "2.png", "7.gif", "notes.txt", "8.jpg.txt",
                      "._1.jpg", ".9.jpg"])
    (tmp_path / "0.jpg").mkdir()  # a folder named like a frame
    assert _names(tmp_path) == ["1.jpg", "2.png", "3.JPG", "4.Png", "5.bmp", "6.jpeg"]
    assert list_frames(tmp_path) == [os.path.join(tmp_path, n) for n in _names(tmp_path)]
    assert list_frames(str(tmp_path))[0] == os.path.join(str(tmp_path), "1.jpg")


def test_empty_folder(tmp_path):
    assert list_frames(tmp_path) == []
