"""The --quick variants of the noise-robustness and learnability benchmarks run end to end and
write self-consistent result files (the scalability benchmark is covered in test_flops.py)."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO


def _run(script, tmp_path, *extra):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick", "--out", str(tmp_path), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_noise_robustness_quick(tmp_path):
    proc = _run("noise_robustness.py", tmp_path, "--work", str(tmp_path / "runs"))
    result = json.loads((tmp_path / "noise_robustness_quick.json").read_text())
    assert "--quick" in result["meta"]["command"] and result["meta"]["machine"]
    runs = {r["strategy"]: r for r in result["runs"]}
    assert set(runs) == {"ce", "agreement", "consensus"}
    assert len(list((tmp_path / "noise_robustness_quick_runs").glob("*.json"))) == 3  # one file per run
    for r in runs.values():
        assert r["noise"] == "symmetric" and r["noise_rate"] == 0.4 and r["distribution"] == "long_tail"
        for m in (r, r["val"]):
            assert 0 <= m["war"] <= 1 and 0 <= m["uar"] <= 1
        for key in ("noisy_vs_is_noisy", "hard_vs_is_hard"):
            assert 0 <= r[key]["precision"] <= 1 and 0 <= r[key]["recall"] <= 1
        assert 0 <= r["clean_rare_dropped"] <= r["clean_rare"]
    # CE flags nothing; the agreement loss flags exactly the configured shares of the 48 videos
    # (2 epochs, warm-up 1: the flags of the last epoch were computed after epoch 1); consensus
    # flags at most those shares.
    assert runs["ce"]["noisy_vs_is_noisy"]["flagged"] == runs["ce"]["hard_vs_is_hard"]["flagged"] == 0
    assert runs["agreement"]["hard_vs_is_hard"]["flagged"] == round(0.2 * 48)
    assert runs["agreement"]["noisy_vs_is_noisy"]["flagged"] == round(0.1 * 48)
    assert runs["consensus"]["hard_vs_is_hard"]["flagged"] <= round(0.2 * 48)
    assert runs["consensus"]["noisy_vs_is_noisy"]["flagged"] <= round(0.1 * 48)
    assert "table_v" in runs["agreement"] and "table_v" not in runs["ce"]
    assert result["meta"]["finalist"] == "consensus"  # the only robust flag rule in the quick grid
    md = (tmp_path / "noise_robustness_quick.md").read_text()
    assert "| noise | strategy |" in md and "Table V" in md and md in proc.stdout
    with Image.open(tmp_path / "noise_robustness_quick.png") as img:
        assert img.format == "PNG"


def test_synthetic_learnability_quick(tmp_path):
    proc = _run("synthetic_learnability.py", tmp_path)
    result = json.loads((tmp_path / "synthetic_learnability_quick.json").read_text())
    assert list(result["results"]) == ["one random frame", "whole video", "key window"]
    for r in result["results"].values():
        assert 0 <= r["war"] <= 1 and r["seconds"] > 0
    assert "| key window |" in proc.stdout


def test_key_window_view_reads_inside_the_window():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from synthetic_learnability import view

    video = torch.arange(10, dtype=torch.uint8).view(1, 1, 10, 1, 1).expand(1, 1, 10, 2, 2).contiguous()
    frames = view(video, torch.tensor([[2, 7]]), "key window", torch.Generator())
    assert frames[0, 0, :, 0, 0].tolist() == pytest.approx(torch.linspace(2, 6, 10).tolist())
    single = view(video, torch.tensor([[2, 7]]), "one random frame", torch.Generator().manual_seed(0))
    assert single[0, 0, :, 0, 0].unique().numel() == 1


def test_dataloading_quick(tmp_path):
    proc = _run("dataloading.py", tmp_path)
    result = json.loads((tmp_path / "dataloading_quick.json").read_text())
    assert "--quick" in result["command"] and result["machine"]["cores"] >= 1
    assert result["tree"]["clips"] == 6 and 20 <= result["tree"]["mean_frames_per_clip"] <= 80
    (row,) = result["rows"]
    assert (row["num_frames"], row["workers"]) == (8, 0)
    for name in ("baseline", "folder", "folder_1thread", "packed", "wds_local", "wds_http"):
        assert row[name]["clips_per_s"] > 0 and row[name]["clips"] >= 6 and len(row[name]["rounds"]) == 1
    assert result["pack"]["webdataset"]["mb"] < result["pack"]["mb"]  # JPEG frames: smaller than the raw pack
    assert not (tmp_path / "dataloading.json").exists()  # --quick never takes the committed results' name
    md = (tmp_path / "dataloading_quick.md").read_text()
    assert "| 8 | 0 |" in md and result["verdict"] in md and md in proc.stdout
    # The worker transport table: with no workers only rdfer's batches and PyTorch's, and no verdict
    (tr,) = result["transport"]["rows"]
    assert (tr["num_frames"], tr["workers"]) == (8, 0) and {"rdfer", "torch"} <= set(tr)
    assert "shared_gather" not in tr and result["transport"]["keep"] is None
    assert tr["ratio"] == pytest.approx(tr["rdfer"]["clips_per_s"] / tr["torch"]["clips_per_s"])
    assert "## Worker transport" in md and result["transport"]["verdict"] in md
    d_over_c = row["wds_local"]["clips_per_s"] / row["packed"]["clips_per_s"]
    assert "## WebDataset shards" in md and f"| {d_over_c:.2f} |" in md


def test_dataloading_transports_differ_only_in_the_path(tmp_path):
    # The worker transport table is fair: every transport gives the same batches, and only (i)
    # sends the video outside PyTorch's shared-memory tensors.
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from torch.utils.data import DataLoader

    from data_trees import make_dfew
    from dataloading import TRANSPORTS
    from rdfer.data import DFEW, pack_dataset
    from rdfer.data import shm

    source = DFEW(make_dfew(tmp_path / "DFEW", size=32), 1, "train", num_frames=8, image_size=64, train=False)
    pack = pack_dataset(source, tmp_path / "pack", num_frames=8, image_size=64, progress=False)
    expected = None
    for name in ("rdfer", "torch", "shared_gather"):
        cls, collate, _, _ = TRANSPORTS[name]
        batches = list(DataLoader(cls(pack, num_frames=8), batch_size=2, num_workers=1, collate_fn=collate))
        expected = expected or batches
        for a, b in zip(batches, expected):
            assert type(a) is dict and torch.equal(a["video"], b["video"]) and torch.equal(a["label"], b["label"])
        assert batches[0]["video"].is_shared() is (name != "rdfer" or not shm.AVAILABLE), name


def test_predict_speed_quick(tmp_path):
    proc = _run("predict_speed.py", tmp_path)
    result = json.loads((tmp_path / "predict_speed_quick.json").read_text())
    assert "--quick" in result["command"] and result["machine"]["cores"] >= 1 and result["quick"] is True
    assert not (tmp_path / "predict_speed.json").exists()  # --quick never takes the committed results' name
    assert [(r["size"], r["video_s"]) for r in result["rows"]] == [("640x360", 2.0), ("1280x720", 1.0)]
    for r in result["rows"]:
        assert r["num_frames"] == round(30 * r["video_s"]) and r["wall_s"] > 0 and r["peak_growth_mib"] > 0
        assert r["x_realtime"] == pytest.approx(r["video_s"] / r["wall_s"], rel=0.01)
        if r["status"] == "ok":  # strided detection: far fewer detections than frames
            assert r["detector_calls"] <= r["num_frames"] // 3
    md = (tmp_path / "predict_speed_quick.md").read_text()
    assert "| x real time |" in md and result["verdict"] in md and md in proc.stdout


def test_resampler_quick(tmp_path):
    proc = _run("resampler.py", tmp_path)
    result = json.loads((tmp_path / "resampler_quick.json").read_text())
    assert "--quick" in result["meta"]["command"]
    rows = {s["row"]: s for s in result["summary"]}
    assert set(rows) == {"uniform", "saliency", "keyinstance", "oracle"}
    assert {s["setting"] for s in result["summary"]} == {"quick"}
    # Uniform sampling reads the whole video, so its window IoU is the key window's share of it
    # (20-35% of 16 frames), the same before and after training; the oracle reports no IoU.
    assert rows["uniform"]["iou_init"][0] == pytest.approx(rows["uniform"]["test_iou"][0])
    assert 0.15 <= rows["uniform"]["test_iou"][0] <= 0.4
    assert "test_iou" not in rows["oracle"] and 0 <= rows["oracle"]["test_war"][0] <= 1
    assert 0 <= rows["saliency"]["test_iou"][0] <= 1 and rows["saliency"]["seconds_per_epoch"][0] > 0
    # Partial results are written after every run, so an interrupted grid keeps what it measured.
    assert len(json.loads((tmp_path / "resampler_quick_runs.json").read_text())) == 4
    md = (tmp_path / "resampler_quick.md").read_text()
    assert "| row | seeds |" in md and md in proc.stdout


def test_resampler_step_timing_quick(tmp_path):
    _run("resampler.py", tmp_path, "--timing", "--rows", "peak", "keyinstance")
    timing = json.loads((tmp_path / "resampler_timing_quick.json").read_text())["timing"]["16"]
    assert set(timing["seconds_per_step"]) == {"peak", "keyinstance"} and timing["ratio_to_peak"]["peak"] == 1.0
    assert all(t > 0 for t in timing["seconds_per_step"].values())


def test_noise_robustness_row_names_map_to_training_options(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import noise_robustness as nr

    assert nr.strategy_options("agreement") == {"strategy": "agreement"}
    assert nr.strategy_options("agreement+mismatch") == {"strategy": "agreement", "noisy_requires_mismatch": True}
    assert nr.strategy_options("consensus+history") == {"strategy": "consensus", "memory_momentum": 0.5}
    # Suffixes that set the rule's options merge them (issue 23's rows).
    assert nr.strategy_options("elr+clips+strong") == {
        "strategy": "elr", "strategy_options": {"source": "clips", "lam": 7.0, "beta": 0.9}}
    assert nr.strategy_options("clip_vote+la") == {"strategy": "clip_vote", "logit_adjustment": 1.0}
    with pytest.raises(KeyError):
        nr.strategy_options("agreement+typo")


def test_small_data_quick(tmp_path):
    rows = ["frame baseline, small recipe", "rdfer, small, frame head + class guard 0.5"]
    _run("small_data.py", tmp_path, "--work", str(tmp_path / "work"), "--rows", *rows)
    result = json.loads((tmp_path / "small_data_quick.json").read_text())
    assert [s["row"] for s in result["summary"]] == rows and result["meta"]["not_run"] == []
    for run in result["runs"]:
        for key in ("train_war", "train_uar", "val_war", "val_uar", "test_war", "test_uar"):
            assert 0.0 <= run[key] <= 1.0, key
    # The rows are what they say: the baseline model, and rdfer with the frame head and the guard.
    import yaml

    base = yaml.safe_load((tmp_path / "work" / "frame_baseline__small_recipe-s0" / "config.yaml").read_text())
    rd = yaml.safe_load((tmp_path / "work" / "rdfer__small__frame_head___class_guard_0_5-s0" / "config.yaml").read_text())
    assert base["model"] == "frame_baseline" and base["strategy"] == "ce"
    assert rd["model_options"]["frame_head"] is True and rd["noisy_class_guard"] == 0.5
    md = (tmp_path / "small_data_quick.md").read_text()
    assert "| frame baseline, small recipe | 1 |" in md
    # --report-only trains nothing and lists what is missing.
    _run("small_data.py", tmp_path, "--work", str(tmp_path / "work"), "--report-only", "--rows", rows[0],
         "rdfer, small recipe")
    again = json.loads((tmp_path / "small_data_quick.json").read_text())
    assert again["meta"]["not_run"] == ["rdfer, small recipe"]


def test_feeding_quick(tmp_path):
    """Issue 26: clips/s per core per data stage, what one H200 consumes, and the cores that
    follow, computed consistently from each other (and from the scalability FLOPs)."""
    proc = _run("feeding.py", tmp_path, "--device", "cpu")
    result = json.loads((tmp_path / "feeding_quick.json").read_text())
    assert "--quick" in result["command"] and result["machine"]["cores"] >= 1 and result["quick"] is True
    assert not (tmp_path / "feeding.json").exists()  # --quick never takes the committed results' name
    assert result["recipe"]["num_frames"] == 64 and result["recipe"]["image_size"] == 112
    assert 1000 < result["data"]["mean_jpeg_112_bytes"] < result["data"]["mean_jpeg_224_bytes"]
    # What one GPU consumes: peak x utilisation / (2 FLOPs per multiply-add x 3 x forward multiply-adds).
    gpu = result["gpu"]
    rows = json.loads((REPO / "benchmarks" / "results" / "scalability.json").read_text())["rows"]
    assert list(gpu["models"]) == ["r3d_18", "r2plus1d_18", "former_dfer"]
    for name, m in gpu["models"].items():
        (row,) = [r for r in rows if r["backbone"] == name and r["variant"] == "rdfer"]
        assert m["fvcore_gflops"] == row["fvcore_gflops"]
        flops = row["fvcore_gflops"] * 1e9 * 2 * 3
        assert m["clips_per_s_main"] == pytest.approx(gpu["peak_tflops"] * 1e12 * gpu["utilisation"] / flops)
        for u, rate in m["clips_per_s"].items():
            assert rate == pytest.approx(gpu["peak_tflops"] * 1e12 * float(u) / flops)
    assert gpu["models"]["former_dfer"]["clips_per_s_main"] > gpu["models"]["r3d_18"]["clips_per_s_main"] > 100
    (t,) = result["results"]
    cell = result["results"][t]
    assert t == "16"
    stages = cell["stages"]
    for s in stages.values():
        assert s["clips_per_s"] > 0 and s["wall_clips_per_s"] > 0 and len(s["rounds"]) == 1
        assert s["frames_per_s"] == pytest.approx(s["clips_per_s"] * 16)
    # The bottleneck: the lowest clips/s per core of the stages rdfer runs on CPU cores.
    cpu = {n: s["clips_per_s"] for n, s in stages.items() if s["cpu_stage"]}
    assert {"read_shard", "decode_112", "decode_resize_224", "read_packed", "transport", "transport_jpeg"} <= set(cpu)
    assert set(cell["pipelines"]) == {"shards", "folders", "packed", "shards_gpu_decode"}
    assert not stages["augment_cpu"]["cpu_stage"] and not stages["decode_112_torchvision"]["cpu_stage"]
    assert cell["bottleneck"] == min(cpu, key=cpu.get)
    for model, c in cell["cores"].items():
        need = gpu["models"][model]["clips_per_s_main"]
        assert c["clips_per_s_per_gpu"] == need
        for p, spec in cell["pipelines"].items():
            got = c["pipelines"][p]
            assert set(got["per_stage"]) == set(spec["stages"])
            for s, cores in got["per_stage"].items():
                assert cores == pytest.approx(need / stages[s]["clips_per_s"])
            assert got["per_gpu"] == pytest.approx(sum(got["per_stage"].values()))
            assert got["per_node"] == pytest.approx(8 * got["per_gpu"])
            assert spec["bottleneck"] == min(spec["stages"], key=lambda s: stages[s]["clips_per_s"])
            assert spec["clips_per_s_per_core"] == pytest.approx(need / got["per_gpu"])
        assert c["pipelines"]["augment_on_cpu"]["per_gpu"] == pytest.approx(need / stages["augment_cpu"]["clips_per_s"])
        assert c["link_share_decoded"] == pytest.approx(need * 3 * 16 * 112 * 112 / 50e9)
    assert cell["bytes_per_clip"]["decoded_uint8"] == 3 * 16 * 112 * 112
    # --device cpu runs the device stages' code (a smoke test of what --device cuda measures).
    device = result["device"]["results"][t]
    assert set(device) == {"decode_112", "augment", "host_to_device"}
    assert all(r["clips_per_s"] > 0 for r in device.values())
    md = (tmp_path / "feeding_quick.md").read_text()
    assert "| stage | where rdfer runs it |" in md and result["verdict"] in md and md in proc.stdout
    for section in ("stages", "gpu", "cores", "bandwidth"):
        assert f"<!-- --8<-- [start:{section}] -->" in md and f"<!-- --8<-- [end:{section}] -->" in md


def test_raw_videos_quick(tmp_path):
    """Issue 35's stand-in: trained on tight crops of drawn faces, evaluated on the raw videos with
    the recorded framing, the old margin, the tight crops and a framing sweep (plain and with TTA),
    with and without scale jitter; the JSON holds every condition and the pre-registered decisions."""
    pytest.importorskip("cv2")
    proc = _run("raw_videos.py", tmp_path, "--work", str(tmp_path / "work"))
    result = json.loads((tmp_path / "raw_videos_quick.json").read_text())
    meta = result["meta"]
    assert "--quick" in meta["command"] and meta["quick"] is True and meta["threads"] >= 1 and meta["wall_seconds"] > 0
    assert not (tmp_path / "raw_videos.json").exists()  # --quick never takes the committed results' name
    assert meta["videos"] == {"val": 4, "test": 4}
    # The drawn faces are found by the detector that crops them at prediction.
    for split in ("val", "test"):
        assert meta["splits"][split]["haar_found_share_all"] >= 0.6
    # Batched crops are predict_video's own (it rounds probabilities to 4 digits).
    assert meta["cached_path_max_prob_diff"] <= 1e-4
    conditions = {"recorded", "old_margin_0.25", "tight_no_detect", "recorded_mirror_tta", "recorded_multiscale_tta"}
    conditions |= {f"margin_{m}{s}" for m in (0.0, 0.1, 0.25, 0.5) for s in
                   ("", "_mirror_tta", "_multiscale_tta", "_keep_offsets", "_keep_offsets_multiscale_tta")}
    assert [(r["scale_jitter"], r["seed"]) for r in result["runs"]] == [(0.0, 0), (0.25, 0)]
    for run in result["runs"]:
        framing = run["eval"]["framing"]
        assert framing["source"] in ("measured", "tight") and -0.4 <= framing["margin"] <= 4
        assert ("--scale-jitter " + str(run["scale_jitter"])) in run["train_command"]
        for split in ("val", "test"):
            res = run["eval"]["splits"][split]
            assert conditions <= set(res)
            for c in conditions:
                assert 0 <= res[c]["war"] <= 1 and 0 <= res[c]["uar"] <= 1, c
    assert set(result["summary"]) == {"0.0", "0.25"}
    for setting in result["summary"].values():
        wrong = setting["val"]["wrong_mean"]["war"]
        assert wrong["n"] == 1 and 0 <= wrong["mean"] <= 1
    decision = result["decision"]
    assert isinstance(decision["scale_jitter"]["adopt"], bool) and isinstance(decision["multiscale_tta"]["clearly_helps"], bool)
    md = (tmp_path / "raw_videos_quick.md").read_text()
    assert "| scale jitter | 1. recorded framing (the fix) |" in md and decision["scale_jitter"]["verdict"] in md
    assert md in proc.stdout


def test_startup_quick(tmp_path):
    _run("startup.py", tmp_path)
    result = json.loads((tmp_path / "startup_quick.json").read_text())
    assert "--quick" in result["command"] and result["rounds"] == 2 and result["quick"] is True
    assert not (tmp_path / "startup.json").exists()  # --quick never takes the committed results' name
    summary = result["summary"]
    assert set(summary) == {"import_torch", "version", "train_help", "predict_first_output", "train_first_output"}
    assert summary["import_torch"]["ratio_to_import_torch"] == 1.0
    # `rdfer --version` imports no torch (tests/test_startup.py): it must beat a program that does.
    assert summary["version"]["ratio_to_import_torch"] < 1.0
    assert all(len(runs) == 2 for runs in result["times"].values())
    assert "| `rdfer --version` |" in (tmp_path / "startup_quick.md").read_text()


def test_gpu_check_runs_its_scripts_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check_quick.json").read_text())
    assert [s["script"] for s in result["steps"]] == ["scalability.py", "feeding.py", "predict_speed.py"]
    assert all(s["status"] == "ok" for s in result["steps"])
    assert {f for s in result["steps"] for f in s["files"]} >= {"scalability_quick.json", "feeding_quick.json",
                                                                 "predict_speed_quick.json"}
    scal = json.loads((tmp_path / "scalability_quick.json").read_text())
    timed = [o for o in scal["overhead"] if "step_over_flops" in o]
    assert timed and all(o["step_over_flops"] == pytest.approx(o["step_ratio"] / o["flops_ratio"]) for o in timed)
    assert json.loads((tmp_path / "predict_speed_quick.json").read_text())["device"] == "cpu"
    assert "Training step time against FLOPs" in (tmp_path / "scalability_quick.md").read_text()
