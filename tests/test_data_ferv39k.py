"""FERV39K loader on a miniature tree: label mapping (names and FERV39K's integer order), paths,
sampling, and construction errors naming the file and line."""

import pytest
import torch

from data_trees import FERV_CLIPS, corrupt, make_ferv39k, video_frame_numbers, write_ferv_list
from rdfer.data import EMOTIONS, FERV39K, FERV39K_CLASSES, eval_indices
from rdfer.data.decode import BadInputWarning


@pytest.fixture
def ferv(tmp_path):
    return make_ferv39k(tmp_path / "FERV39K")


def test_class_orders():
    assert FERV39K_CLASSES == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert sorted(FERV39K_CLASSES) == sorted(EMOTIONS)


def test_labels_paths_and_items(ferv):
    ds = FERV39K(ferv, "train", num_frames=8, image_size=32)
    assert ds.train is True and FERV39K(ferv, "test").train is False
    assert ds.classes == list(EMOTIONS)
    # "Happy" -> happy, "fear" (any case) -> fear, integer 0 in FERV39K order -> angry
    assert ds.labels == [EMOTIONS.index("happy"), EMOTIONS.index("fear"), EMOTIONS.index("angry")]
    assert [p for p, _ in ds.samples] == [str(ferv / "2_ClipsforFaceCrop" / rel) for rel in FERV_CLIPS]
    ds.train = False
    for i, (rel, (_, n)) in enumerate(FERV_CLIPS.items()):
        item = ds[i]
        assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.uint8
        assert item["index"] == i and item["label"] == ds.labels[i] and item["valid"]
        assert item["frame_index"].tolist() == eval_indices(n, 8).tolist()
        assert video_frame_numbers(item["video"]) == [p + 1 for p in item["frame_index"].tolist()]


@pytest.mark.parametrize("label, emotion", [("1", "disgust"), ("2", "fear"), ("3", "happy"), ("4", "neutral"),
                                            ("5", "sad"), ("6", "surprise"), ("SURPRISE", "surprise"),
                                            ("Disgust", "disgust")])
def test_label_forms(ferv, label, emotion):
    write_ferv_list(ferv, "test", [f"Action/Happy/0001 {label}"])
    assert FERV39K(ferv, "test").labels == [EMOTIONS.index(emotion)]


def test_train_sampling_and_corrupt_frame(ferv):
    clip = ferv / "2_ClipsforFaceCrop" / "Action" / "Happy" / "0001"
    corrupt(clip / "12.jpg")  # the last frame: its only neighbour is 11.jpg
    ds = FERV39K(ferv, "train", num_frames=4, image_size=16)
    with pytest.warns(BadInputWarning, match="12.jpg"):
        for _ in range(10):
            idx = ds[0]["frame_index"].tolist()
            assert [p // 3 for p in idx] == [0, 1, 2, 3] and 11 not in idx
    assert ds.replaced_frames == {str(clip): [(str(clip / "12.jpg"), str(clip / "11.jpg"))]}


def test_construction_errors_name_file_and_line(ferv):
    write_ferv_list(ferv, "test", ["Action/Happy/0001 Happy", "Action/Happy/0001 Contempt"])
    with pytest.raises(ValueError, match=r"test_All\.csv, row 2: unknown label 'Contempt'"):
        FERV39K(ferv, "test")
    write_ferv_list(ferv, "test", ["Action/Happy/0001 7"])
    with pytest.raises(ValueError, match=r"row 1: unknown label '7'"):
        FERV39K(ferv, "test")
    write_ferv_list(ferv, "test", ["Action/Happy/0001 Happy", "", "Action/Happy/0001"])
    with pytest.raises(ValueError, match=r"row 3: expected two space-separated columns"):
        FERV39K(ferv, "test")
    write_ferv_list(ferv, "test", ["Action/Sad/9999 Sad"])
    with pytest.raises(FileNotFoundError, match=r"test_All\.csv, row 1: clip folder not found: .*Action/Sad/9999"):
        FERV39K(ferv, "test")
    write_ferv_list(ferv, "test", [])
    with pytest.raises(ValueError, match=r"test_All\.csv: empty split"):
        FERV39K(ferv, "test")
    (ferv / "4_setups" / "All_scenes" / "test_All.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"test_All\.csv"):
        FERV39K(ferv, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        FERV39K(ferv, "val")


def test_unreadable_clip_is_invalid(ferv):
    clip = ferv / "2_ClipsforFaceCrop" / "Daily" / "Fear" / "0002"
    for p in clip.iterdir():
        corrupt(p)
    ds = FERV39K(ferv, "train", num_frames=4, image_size=16)
    with pytest.warns(BadInputWarning):
        item = ds[1]
    assert not item["valid"] and not item["video"].any() and item["label"] == EMOTIONS.index("fear")
    assert str(clip) in ds.bad_sample_report()
