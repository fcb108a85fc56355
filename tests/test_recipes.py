"""Recipes (issue 28): small training sets get a recipe that fits them, flags still win."""

from __future__ import annotations

import json

import pytest

from rdfer.cli import _train_config_from_args, build_parser
from rdfer.engine.config import RECIPES, SMALL_SET_VIDEOS, default_recipe


def test_default_recipe_by_dataset_and_size():
    assert default_recipe("synthetic") == "cpu" and default_recipe("synthetic", 10) == "cpu"
    assert default_recipe("csv") == "paper"  # size unknown
    assert default_recipe("csv", SMALL_SET_VIDEOS - 1) == "small"
    assert default_recipe("csv", SMALL_SET_VIDEOS) == "paper"
    assert default_recipe("dfew", 9000) == "paper"


def _csv(tmp_path, rows):
    path = tmp_path / "train.csv"
    path.write_text("path,label\n" + "".join(f"v{i}.mp4,happy\n" for i in range(rows)))
    return path


def _config(argv):
    args = build_parser().parse_args(argv)
    vars(args).pop("debug", None)  # as main() does
    return _train_config_from_args(args)


def test_a_small_csv_gets_the_small_recipe_and_says_so(tmp_path, capsys):
    train = _csv(tmp_path, 12)
    cfg = _config(["train", "csv", "--train", str(train), "--test", str(train)])
    small = RECIPES["small"]
    assert (cfg.batch_size, cfg.epochs, cfg.warmup_epochs, cfg.lr) == (
        small["batch_size"], small["epochs"], small["warmup_epochs"], small["lr"])
    assert "a small training set (12 videos): the 'small' recipe" in capsys.readouterr().out
    # The paper's recipe on request, and a flag beats any recipe.
    assert _config(["train", "csv", "--train", str(train), "--test", str(train), "--recipe", "paper"]).batch_size == 128
    assert _config(["train", "csv", "--train", str(train), "--test", str(train), "--batch-size", "4"]).batch_size == 4


def test_a_large_pack_keeps_the_paper_recipe(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "index.json").write_text(json.dumps({"num_samples": SMALL_SET_VIDEOS}))
    cfg = _config(["train", "packed", "--train", str(pack), "--test", str(pack)])
    assert cfg.batch_size == 128 and cfg.epochs == 100


@pytest.mark.parametrize("content", [None, "not a csv header\n"])
def test_an_unreadable_training_csv_leaves_the_choice_to_the_dataset_checks(tmp_path, content):
    path = tmp_path / "train.csv"
    if content is not None:
        path.write_text(content)
    cfg = _config(["train", "csv", "--train", str(path), "--test", str(path)])
    assert cfg.batch_size == 128  # unknown size: the paper's recipe; the dataset reports the file


def test_the_small_recipe_turns_on_the_class_guard_and_the_frame_head(tmp_path):
    from rdfer.engine.train import build_model

    train = _csv(tmp_path, 12)
    cfg = _config(["train", "csv", "--train", str(train), "--test", str(train)])
    assert cfg.noisy_class_guard == 0.5 and cfg.model_options == {"frame_head": True}
    assert build_model(cfg, 7).frame_head is not None
    # A model option of one's own joins the recipe's; the paper's recipe keeps the paper's model.
    cfg = _config(["train", "csv", "--train", str(train), "--test", str(train), "--model-option", "d_model=32"])
    assert cfg.model_options == {"frame_head": True, "d_model": 32}
    paper = _config(["train", "csv", "--train", str(train), "--test", str(train), "--recipe", "paper"])
    assert paper.noisy_class_guard == 0.0 and build_model(paper, 7).frame_head is None
    # The frame baseline has no frame head to turn on: it is one.
    base = _config(["train", "csv", "--train", str(train), "--test", str(train), "--model", "frame_baseline"])
    assert type(build_model(base, 7)).__name__ == "FrameBaseline"
