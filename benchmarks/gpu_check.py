"""The prepared GPU check: run it whenever a GPU machine is available (about 8 minutes at most).

    python benchmarks/gpu_check.py                         # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --quick    # the same scripts as smoke runs on the CPU (the tests)

Runs, one after another, each in its own process with a time limit so that one slow step cannot
eat the others' time:

1. ``scalability.py --device cuda``: parameters, fvcore FLOPs, latency and the measured training
   step with and without the wrapper, five Table VI backbones, and the step-time / FLOPs ratio
   (``scalability_cuda.{json,md}``);
2. ``feeding.py --device cuda``: decode, augmentation and the host-to-GPU copy against the GPU's
   appetite (``feeding_cuda.{json,md}``);
3. ``predict_speed.py --device cuda``: ``predict_video`` with the model on the GPU (decoding and
   face detection stay on the CPU; ``predict_speed_cuda.{json,md}``).

Every result file names the device it ran on. A summary of what ran, how long it took and which
files it wrote goes to ``gpu_check{,_quick}.{json,md}``. A step that fails or runs out of time is
reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: (script, extra arguments, time limit in seconds on a GPU): 7.5 minutes in all.
STEPS = [("scalability.py", [], 210), ("feeding.py", [], 90), ("predict_speed.py", [], 150)]


def run_step(script: str, extra: List[str], device: str, quick: bool, out: Path, limit: float) -> Dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--device", device, "--out", str(out), *extra]
    if quick:
        cmd.append("--quick")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*") if p.is_file()}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=limit)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit:.0f} s"
    written = sorted(p.name for p in out.glob("*") if p.is_file() and before.get(p.name) != p.stat().st_mtime_ns)
    return {"script": script, "command": " ".join(["python", f"benchmarks/{script}", *cmd[2:]]).replace(str(out), "OUT"),
            "status": status, "seconds": round(time.perf_counter() - start, 1), "files": written}


def to_markdown(res: Dict[str, Any]) -> str:
    lines = ["# GPU check", "", f"Command: `{res['command']}`  ", f"Machine: {res['machine']['cpu']}, "
             f"{res['machine']['cores']} cores; device `{res['device']}` ({res['gpu'] or 'no GPU'}); {res['date']}.", "",
             "| step | status | seconds | files written |", "|---|---|---:|---|"]
    lines += [f"| `{s['command']}` | {s['status']} | {s['seconds']} | {', '.join(s['files']) or '-'} |" for s in res["steps"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="each script's smoke run (the tests use it on the CPU)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    import torch

    from dataloading import machine, write_results

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; on the CPU run it with --device cpu --quick")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [run_step(script, extra, args.device, args.quick, out, limit * (4 if args.quick else 1))
             for script, extra, limit in STEPS]
    res = {"command": "python benchmarks/gpu_check.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
           "date": datetime.date.today().isoformat(), "machine": machine(), "device": args.device,
           "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None, "quick": args.quick, "steps": steps}
    write_results(out, "gpu_check_quick" if args.quick else "gpu_check", res, to_markdown)
    return 0 if all(s["status"] == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
