"""How long the command line makes a user wait before it answers, as ratios to ``import torch``.

    python benchmarks/startup.py            # 7 paired rounds (~2 min)
    python benchmarks/startup.py --quick    # 2 rounds (the tests)

Each round runs, one after another in the same order, ``python -c "import torch"`` (the yardstick:
no PyTorch program starts faster), ``rdfer --version``, ``rdfer train --help``, ``rdfer predict``
on a real face video with a small trained model (time to its first line of output, the
prediction), and ``rdfer train`` on the built-in synthetic set (time to its first output, of any
kind). Each measure is reported as the median over the rounds and as the median of its per-round
ratio to ``import torch``: the ratios hold across machines and loads, the seconds do not.
Writes ``benchmarks/results/startup{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

VIDEO = ROOT.parent / "shared" / "data" / "real-video" / "single_face.mp4"
GOALS = {"version": 0.15, "predict_first_output": 1.3}


def rdfer_command() -> List[str]:
    """The ``rdfer`` console script beside this Python (what users type), else ``python -m rdfer``."""
    script = Path(sys.executable).parent / "rdfer"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rdfer"]


def first_output(cmd: List[str], cwd: Path) -> Dict[str, float]:
    """Seconds to the first byte the command writes (stdout or stderr) and to its exit."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - start
    rest = proc.stdout.read()
    code = proc.wait()
    if code not in (0, 4):  # 4: predict's "some frames had no face" (a result, not a failure)
        raise RuntimeError(f"{' '.join(cmd)} exited {code}: {(first + rest).decode(errors='replace')[-2000:]}")
    return {"first": t_first, "exit": time.perf_counter() - start}


def make_checkpoint(work: Path) -> Path:
    """A small trained model (seconds of training) to predict with."""
    out = work / "model"
    subprocess.run(rdfer_command() + ["train", "synthetic", "--synthetic-train", "24", "--synthetic-test", "12",
                                      "--num-frames", "16", "--image-size", "48", "--epochs", "1", "--warmup-epochs",
                                      "0", "--batch-size", "8", "--workers", "0", "--quiet", "--out", str(out)],
                   check=True, capture_output=True)
    return out


def make_video(work: Path) -> Path:
    """The real face clip when ../shared is there, else a 3 s clip of predict_speed.py's drawn face
    (pip users)."""
    if VIDEO.is_file():
        return VIDEO
    from predict_speed import _source_frames, make_video as encode

    return encode(work / "clip.mp4", _source_frames(True)[0], (640, 360), 3.0)


def measure(rounds: int, work: Path) -> Dict[str, List[Dict[str, float]]]:
    rdfer = rdfer_command()
    checkpoint, video = make_checkpoint(work), make_video(work)
    commands = {
        "import_torch": [sys.executable, "-c", "import torch"],
        "version": rdfer + ["--version"],
        "train_help": rdfer + ["train", "--help"],
        "predict_first_output": rdfer + ["predict", str(video), "--checkpoint", str(checkpoint)],
        "train_first_output": rdfer + ["train", "synthetic", "--synthetic-train", "24", "--synthetic-test", "12",
                                       "--num-frames", "8", "--image-size", "32", "--epochs", "1", "--warmup-epochs",
                                       "0", "--batch-size", "8", "--workers", "0", "--out", str(work / "train"),
                                       "--overwrite"],
    }
    times: Dict[str, List[Dict[str, float]]] = {k: [] for k in commands}
    for r in range(rounds):
        for name, cmd in commands.items():
            times[name].append(first_output(cmd, work))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]['first']:.2f} s" for k, v in times.items()),
              flush=True)
    return times


def summarise(times: Dict[str, List[Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    torch_s = [t["exit"] for t in times["import_torch"]]
    out = {}
    for name, runs in times.items():
        first = [t["first"] if name != "import_torch" else t["exit"] for t in runs]
        out[name] = {"median_s": statistics.median(first),
                     "ratio_to_import_torch": statistics.median(f / base for f, base in zip(first, torch_s))}
    return out


LABELS = {"import_torch": '`python -c "import torch"` (the yardstick)', "version": "`rdfer --version`",
          "train_help": "`rdfer train --help`",
          "predict_first_output": "`rdfer predict VIDEO`: its first line (the prediction)",
          "train_first_output": "`rdfer train synthetic ...`: its first output"}


def to_markdown(res: Dict[str, Any]) -> str:
    lines = ["# Start-up: how long the command line makes you wait", "",
             f"Command: `{res['command']}`  ",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, Python {res['machine']['python']}, "
             f"torch {res['torch']}; {res['date']}; {res['rounds']} paired rounds; video: {res['video']}.", "",
             "Median over the rounds; the ratio is the median of each round's time over that round's "
             "`import torch` (the same load on both sides). The yardstick is the whole `python -c \"import "
             "torch\"` run, interpreter exit included; the others are timed to their first output.", "",
             "| measure | median (s) | / import torch | goal |", "|---|---:|---:|---:|"]
    for name, s in res["summary"].items():
        goal = GOALS.get(name)
        lines.append(f"| {LABELS[name]} | {s['median_s']:.2f} | {s['ratio_to_import_torch']:.2f}x | "
                     f"{'' if goal is None else f'<= {goal}x'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (7; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds, for the tests")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 7)
    import torch

    from dataloading import machine, write_results

    with tempfile.TemporaryDirectory(prefix="rdfer-startup-") as tmp:
        video = make_video(Path(tmp))
        times = measure(rounds, Path(tmp))
    res = {"command": "python benchmarks/startup.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                        if (argv if argv is not None else sys.argv[1:]) else ""),
           "machine": machine(), "torch": torch.__version__, "date": datetime.date.today().isoformat(),
           "rounds": rounds, "quick": args.quick,
           "video": video.name if video == VIDEO else "a generated 3 s clip of a drawn face",
           "times": times, "summary": summarise(times)}
    write_results(Path(args.out), "startup_quick" if args.quick else "startup", res, to_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
