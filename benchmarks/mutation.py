"""Mutation testing of rdfer's core: would the tests catch a one-line bug in the method?

    make mutation                                          # everything (long: not part of `make test` or CI)
    python benchmarks/mutation.py --module rdfer/data/sampling.py   # one module's mutants
    python benchmarks/mutation.py --report-only            # rewrite the report from the last results

Two parts, both run from the repository root:

1. **mutmut** (configured in ``[tool.mutmut]`` of pyproject.toml) mutates ``rdfer/losses/``,
   ``rdfer/model/``, ``rdfer/engine/checkpoint.py``, ``rdfer/data/sampling.py`` and the frame
   ordering of ``rdfer/data/decode.py`` (``_natural_key``, ``list_frames``); each mutant runs only
   the tests, among the files listed there, that call the function it changed. Results stay in
   ``mutants/`` (ignored by git); a rerun only tests mutants of functions that changed.
2. **Planted bugs** (:data:`PLANTED`): the one-line bugs that once survived the suite (issue 18),
   and bugs in code mutmut does not mutate (decorated functions such as ``atomic_path``,
   ``AgreementLoss.step_epoch``, ``RDFER.predict``; the training loop), each planted alone in a
   fresh copy of the package and run against its test files. Each one must fail a test.

Writes ``benchmarks/results/mutation.md`` and ``mutation.json``: the score per module,
``killed / (mutants - equivalent)``, every surviving mutant with its diff, and why each mutant
counted as equivalent cannot change behaviour (:data:`EQUIVALENT`).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rdfer.engine.checkpoint import atomic_write_text  # noqa: E402

# Module -> the mutmut names (globs) of the mutants that count for it.
MODULES: Dict[str, List[str]] = {
    "rdfer/engine/checkpoint.py": ["rdfer.engine.checkpoint.*"],
    "rdfer/data/sampling.py": ["rdfer.data.sampling.*"],
    "rdfer/data/decode.py (frame order)": ["rdfer.data.decode.x__natural_key__mutmut_*",
                                           "rdfer.data.decode.x_list_frames__mutmut_*"],
    "rdfer/model/": ["rdfer.model.*"],
    "rdfer/losses/": ["rdfer.losses.*"],
}

# Mutants that cannot change behaviour, keyed by (function, the mutated line as mutmut writes
# it, stripped): the key survives renumbering when other functions of the file change.
EQUIVALENT: Dict[Tuple[str, str], str] = {}


def _equivalent(function: str, changed: str, why: str, *lines: str) -> None:
    for line in (changed, *lines):
        EQUIVALENT[(function, line.strip())] = why


_CLAMP_EVAL = ("The clamp never binds: for 0 <= i < T, 0 <= floor((i + 0.5) n / T) <= floor(n - n / (2T)) <= n - 1 "
               "(float64 arithmetic, exact for any realistic n; a test pins n = 2**25 + 3).")
for _line in ("return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(None, num_source - 1)",
              "return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, None)",
              "return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, )",
              "return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source + 1)"):
    _equivalent("rdfer.data.sampling.x_eval_indices", _line, _CLAMP_EVAL)
_CLAMP_TRAIN = ("The clamp is a guard that no test can reach: lo = floor(i n / T) >= 0 and lo + floor(u (hi - lo)) < hi <= n "
                "for u in [0, 1); only float rounding of u (hi - lo) up to hi - lo, which needs the largest float64 draw "
                "u = 1 - 2**-53 (probability 2**-53), would make it bind.")
for _line in ("idx = (lo + (u * (hi - lo)).floor()).long().clamp_(None, num_source - 1)",
              "idx = (lo + (u * (hi - lo)).floor()).long().clamp_(0, None)",
              "idx = (lo + (u * (hi - lo)).floor()).long().clamp_(0, )",
              "idx = (lo + (u * (hi - lo)).floor()).long().clamp_(0, num_source + 1)"):
    _equivalent("rdfer.data.sampling.x_train_indices", _line, _CLAMP_TRAIN)


_INT64 = "torch.full infers int64 from the int fill value ORDINARY = 0: the same tensor."
for _function in ("rdfer.losses.agreement.x_flag_samples",):
    _equivalent(_function, "flags = torch.full((n,), ORDINARY, device=agreement.device)", _INT64,
                "flags = torch.full((n,), ORDINARY, dtype=None, device=agreement.device)")
# Tensors of shape (batch, classes or features): dim=+1 is dim=-1.
_SAME_AXIS = "The tensor is 2-D (batch, classes or features): dim=+1 and dim=-1 are the same axis."
for _function, _line in (
        ("rdfer.losses.criterion.xǁAgreementLossǁlocator_loss",
         'goal = target if self.locator_target == "label" else logits.detach().argmax(dim=+1)'),
        ("rdfer.losses.gce.xǁGeneralizedCrossEntropyǁbase_loss", "probs = logits.float().softmax(dim=+1)"),
        ("rdfer.model.dual_stream.xǁDualStreamHierarchicalǁ_fuse",
         'return a + b if self.fusion == "sum" else torch.cat([a, b], dim=+1)'),
        ("rdfer.model.rdfer.xǁRDFERǁforward", "z = f if where.summary is None else torch.cat([f, where.summary], dim=+1)"),
        ("rdfer.model.sampler.xǁKeyExpressionSamplerǁ_saliency_window",
         "top = mil_logits(evidence.detach()).argmax(dim=+1)  # (B,)")):
    _equivalent(_function, _line, _SAME_AXIS)

_equivalent("rdfer.losses.agreement.x_agreement_stats",
            "mode = torch.where(votes == top.unsqueeze(1), summed, torch.full_like(summed, -2.0)).argmax(dim=1)",
            "`summed` is a sum of softmax probabilities (>= 0): any negative fill keeps the non-modes below every mode.")
_equivalent("rdfer.losses.flag_rules.xǁ_VoteRuleǁflags", "agree = view.agreement > options.agree_min - 1e-6",
            "Agreement takes the values k / n_clips; `>` and `>=` differ only at agreement == agree_min - 1e-6 exactly, "
            "which no k / n_clips equals for an agree_min of the same form (the 1e-6 absorbs float error).")
_MIXED = ("Only the dtype of a small float32 buffer is left alone: on CPU float32 the same tensor; under "
          "mixed precision, type promotion makes the sum/product float32 either way, the value is the same.")
_equivalent("rdfer.losses.criterion.xǁAgreementLossǁ_base_loss", "logits = logits + self.logit_offset.to(None)", _MIXED)
_equivalent("rdfer.losses.criterion.xǁAgreementLossǁforward", "w = self.weights.to(None)[flags]", _MIXED)

_equivalent("rdfer.engine.checkpoint.x__plain_permissions", "umask = os.umask(1)",
            "The first os.umask call only reads the umask (the next line restores it): the value it sets is never used.")
_equivalent("rdfer.engine.checkpoint.x_load_weights", 'own = getattr(model, "config", None) or {}',
            "`None or {}` is `{}`: the same as the `{}` default.")
_equivalent("rdfer.engine.checkpoint.x_load_weights", "result = model.load_state_dict(state, strict=None)",
            "load_state_dict tests `if strict:`; None is as false as False (our own check of the keys follows).")
for _line in ('backbone_kwargs = config.pop("backbone_kwargs", None)', 'backbone_kwargs = config.pop("backbone_kwargs", )',
              'detector_kwargs = config.pop("detector_kwargs", None)', 'detector_kwargs = config.pop("detector_kwargs", )'):
    _equivalent("rdfer.engine.checkpoint.x_load_model", _line,
                "Every config rdfer writes holds backbone_kwargs and detector_kwargs (wrap_with_rdfer always sets them), "
                "so the default is never taken; and wrap_with_rdfer reads None as {} anyway.")
_equivalent("rdfer.engine.checkpoint.x_load_model", 'config.pop("detector", )',
            "The key is always there (wrap_with_rdfer writes `detector` into every config): the default is never used.")
_equivalent("rdfer.engine.checkpoint.x_load_model", "load_weights(model, file, )",
            "Equivalent on a CPU (the only device here): the mutant drops the device argument and the default is the CPU.")

_EINOPS = "einops axis names are labels: the same pattern in capitals is the same rearrangement."
_equivalent("rdfer.model.dual_stream.xǁDualStreamHierarchicalǁforward",
            'clip_tokens = self.movement(rearrange(grid, "B N1 N2 D -> (B N1) N2 D")).mean(dim=1)', _EINOPS)
_equivalent("rdfer.model.dual_stream.xǁDualStreamHierarchicalǁforward",
            'strided = self.emotion(rearrange(grid, "B N1 N2 D -> (B N2) N1 D")).mean(dim=1)', _EINOPS)
_FLOAT_CASE = "float() reads 'nan' and 'inf' in any case: the same value."
_equivalent("rdfer.model.sampler.x_read_frames",
            'frames = frames.masked_fill(~torch.isfinite(positions).unsqueeze(-1), float("NAN"))', _FLOAT_CASE)
_equivalent("rdfer.model.sampler.xǁKeyExpressionSamplerǁ_saliency_window",
            'z = z.masked_fill(~near, float("-INF"))', _FLOAT_CASE)
_STAND_IN = ("Only the finite stand-in for a non-finite position changes, and it only has to be an index the clamp "
             "keeps in range: the frame read there is discarded (nearest: masked with NaN) or multiplied by an "
             "infinite weight (linear), so the output is non-finite either way and the step is skipped "
             "(a test pins both).")
for _line in ("safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=None, neginf=0.0)",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t - 1, neginf=None)",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, neginf=0.0)",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t - 1, )",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t + 1, neginf=0.0)",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t - 2, neginf=0.0)",
              "safe = torch.nan_to_num(positions.detach(), nan=0.0, posinf=t - 1, neginf=1.0)"):
    _equivalent("rdfer.model.sampler.x_read_frames", _line, _STAND_IN)
_equivalent("rdfer.model.rdfer.xǁRDFERǁforward",
            "where = uniform_positions(video.shape[2], self.num_frames_read, b, video.device, None)",
            "uniform_positions' dtype None means its default, float32, the dtype of every video rdfer feeds a "
            "model (decoders, SyntheticDFER and transforms all give float32).")

_equivalent("rdfer.model.presets.x__register", "factory.__doc__ = None",
            "Only the help() text of the registered factory; create_model and list_models do not read it.")

_PARENTS = ("`target.parents` always ends with `/` (absolute paths) or `.` (relative ones), which exist, so the "
            "default of next() is never used.")
for _line in ('existing = next((p for p in target.parents if p.exists()), None)',
              'existing = next((p for p in target.parents if p.exists()), )',
              'existing = next((p for p in target.parents if p.exists()), Path("XX.XX"))'):
    _equivalent("rdfer.engine.checkpoint.x__disk_full_error", _line, _PARENTS)
_equivalent("rdfer.engine.checkpoint.x_save_training_checkpoint", "raise _disk_full_error(None, final / name) from exc",
            "_disk_full_error does not read its `exc` argument (the cause is chained by `from exc`).")
_WEIGHTS_ONLY = ("Equivalent with the torch this project pins (2.14): torch.load's default is weights_only=True since "
                 "torch 2.6; with torch < 2.6 (allowed by `torch>=2.1`) it would load pickled code, which the "
                 "malicious-state test would catch there.")
for _line in ('return torch.load(path, map_location="cpu", weights_only=None)',
              'return torch.load(path, map_location="cpu", )'):
    _equivalent("rdfer.engine.checkpoint.x_load_training_state", _line, _WEIGHTS_ONLY)


# Hand-written part of the report: what the numbers do and do not cover.
NOTES = """
Notes:

- mutmut does not mutate decorated functions (`atomic_path`, `AgreementLoss.step_epoch`,
  `_remember`, `sync_memory`, `active`, `RDFER.predict`), module-level tables (`SEQUENCE_MODELS`,
  `DEFAULT_CONFIG`, `STRATEGIES`) or code outside these modules (the training loop); the planted
  bugs below cover those.
- A mutant whose tests run code in a child process (the `kill -9` test) is judged only by the
  in-process tests mutmut associates with the function.
"""

# One-line bugs planted by hand: (name, file, [(old, new), ...], pytest arguments; the most specific
# file first, as pytest -x stops at the first failure).
PLANTED: List[Tuple[str, str, List[Tuple[str, str]], List[str]]] = [
    ("clip layout: strided instead of consecutive clips for clip-level backbones", "rdfer/model/rdfer.py",
     [('"b c (n1 n2) h w -> (b n1) c n2 h w"', '"b c (n2 n1) h w -> (b n1) c n2 h w"')],
     ["tests/test_model_layout.py", "tests/test_model.py"]),
    ("atomic_write_text writes in place", "rdfer/engine/checkpoint.py",
     [('with atomic_path(path) as tmp, open(tmp, "w") as f:', 'with open(path, "w") as f:')],
     ["tests/test_checkpoint_atomic.py", "tests/test_engine_checkpoint.py"]),
    ("save_training_checkpoint builds epoch_NNNN in place", "rdfer/engine/checkpoint.py",
     [('tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".epoch_{epoch:04d}."))',
       'tmp = final\n    tmp.mkdir(exist_ok=True)'),
      ("if final.exists():\n            shutil.rmtree(final)\n        os.replace(tmp, final)", "pass")],
     ["tests/test_checkpoint_atomic.py", "tests/test_engine_checkpoint.py"]),
    ("label memory stores the clip vote instead of the label (noisy_requires_mismatch does nothing)",
     "rdfer/losses/criterion.py", [("self.mem_label[index] = target.to(dev)", "self.mem_label[index] = stats.mode_class.to(dev)")],
     ["tests/test_losses_memory.py", "tests/test_losses.py"]),
    ("mu divided by T instead of T-1", "rdfer/model/sampler.py",
     [("mu=centre / max(t - 1, 1)", "mu=centre / max(t, 1)")],
     ["tests/test_model_layout.py", "tests/test_sampler.py", "tests/test_model.py"]),
    ('sequence_model="gru" builds an LSTM', "rdfer/model/dual_stream.py",
     [('"gru": lambda d: RecurrentSequence("gru", d, bidirectional=False)',
       '"gru": lambda d: RecurrentSequence("lstm", d, bidirectional=False)')],
     ["tests/test_model_layout.py", "tests/test_dual_stream.py", "tests/test_model.py"]),
    ("resume silently restarts from scratch", "rdfer/engine/train.py",
     [("        ckpt = latest_checkpoint(run_dir)\n", "        ckpt = None\n")],
     ["tests/test_engine_train.py::test_resume_equals_uninterrupted"]),
    # Code mutmut does not mutate (decorated functions, module-level tables).
    ("atomic_path leaves its temporary behind on failure", "rdfer/engine/checkpoint.py",
     [("        Path(tmp).unlink(missing_ok=True)\n", "        pass\n")],
     ["tests/test_checkpoint_atomic.py", "tests/test_engine_checkpoint.py"]),
    ("atomic_path copies instead of renaming (a crash leaves half a file)", "rdfer/engine/checkpoint.py",
     [("        os.replace(tmp, path)\n", "        shutil.copyfile(tmp, path)\n")],
     ["tests/test_checkpoint_atomic.py", "tests/test_engine_checkpoint.py"]),
    ("step_epoch flags never-seen samples too", "rdfer/losses/criterion.py",
     [("seen = (self.mem_stamp > 0).nonzero().squeeze(1)", "seen = (self.mem_stamp >= 0).nonzero().squeeze(1)")],
     ["tests/test_losses_memory.py", "tests/test_losses.py"]),
    ("memory remembers the smoothed training loss instead of the plain one", "rdfer/losses/criterion.py",
     [("self._remember(index, stats, plain, target, clip_logits)",
       "self._remember(index, stats, self.per_sample_ce(logits, clip_logits, target).detach(), target, clip_logits)")],
     ["tests/test_losses_memory.py", "tests/test_losses.py"]),
    ("reweighting starts one epoch late", "rdfer/losses/criterion.py",
     [("self.rule.reweights and int(self.epoch) >= self.start_epoch",
       "self.rule.reweights and int(self.epoch) > self.start_epoch")],
     ["tests/test_losses_memory.py", "tests/test_losses.py"]),
    ("predict leaves the model in eval mode", "rdfer/model/rdfer.py",
     [("            self.train(was_training)\n", "            pass\n")],
     ["tests/test_model_layout.py", "tests/test_model.py"]),
    ("predict runs in train mode", "rdfer/model/rdfer.py",
     [("        self.eval()\n        try:", "        try:")],
     ["tests/test_model_layout.py", "tests/test_model.py"]),
    ('sequence_model="bigru" builds a one-way GRU', "rdfer/model/dual_stream.py",
     [('"bigru": lambda d: RecurrentSequence("gru", d, bidirectional=True)',
       '"bigru": lambda d: RecurrentSequence("gru", d, bidirectional=False)')],
     ["tests/test_model_layout.py", "tests/test_dual_stream.py", "tests/test_model.py"]),
    # The research issues' code (13: locators, 14: robust rules), planted as it lands.
    ("default locator is the whole-video saliency, not the peak", "rdfer/model/rdfer.py",
     [('    locator="peak",\n', '    locator="saliency",\n')],
     ["tests/test_locators.py"]),
    ("peak locator keeps every glimpse (no neighbourhood)", "rdfer/model/sampler.py",
     [("abs() <= -(-g // 4)", "abs() <= g")],
     ["tests/test_locators.py"]),
    ("class_quantile ranks within the predicted instead of the labelled class", "rdfer/losses.py",
     [("        by_rank = _order(class_quantile(loss, labels), loss, descending=True)",
       "        by_rank = _order(class_quantile(loss, mode_class), loss, descending=True)")],
     ["tests/test_robust_losses.py"]),
    ("vote_small_loss flags samples whose vote agrees with the label", "rdfer/losses.py",
     [("suspect = (agree & (mode_class != labels))", "suspect = (agree & (mode_class == labels))")],
     ["tests/test_robust_losses.py"]),
    ("hard_disagree takes agreeing samples", "rdfer/losses.py",
     [("split = (~agree & (flags == ORDINARY))", "split = (agree & (flags == ORDINARY))")],
     ["tests/test_robust_losses.py"]),
    ("GCE without the power q (a linear loss)", "rdfer/losses.py",
     [("loss = (1 - p ** self.gce_q) / self.gce_q", "loss = (1 - p) / self.gce_q")],
     ["tests/test_robust_losses.py"]),
    ("history keeps the old value's weight for the new one", "rdfer/losses.py",
     [("loss = m * self.mem_loss[index] + (1 - m) * loss", "loss = (1 - m) * self.mem_loss[index] + m * loss")],
     ["tests/test_robust_losses.py"]),
    ("rdfer train ignores --logit-adjustment", "rdfer/engine/train.py",
     [("        logit_adjustment=cfg.logit_adjustment,\n", "        logit_adjustment=0.0,\n")],
     ["tests/test_robust_losses.py"]),
    ("frame order: letters compared with case", "rdfer/data/decode.py",
     [("[int(p) if i % 2 else p.lower() for i, p in enumerate(parts)]", "[int(p) if i % 2 else p for i, p in enumerate(parts)]")],
     ["tests/test_frame_order.py", "tests/test_data_dfew.py"]),
]


# ---- mutmut ------------------------------------------------------------------------------------


def _mutmut(names: List[str], max_children: int) -> None:
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    print("$", shlex.join(cmd[:8]) + (f" ... ({len(names)} mutants)" if len(names) > 4 else ""), flush=True)
    # One torch thread per mutant: two workers on two cores use them fully, and a forked worker
    # never inherits an OpenMP pool (which spins forever in the child, then counts as a timeout).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=REPO, check=False, env=env)


def in_sample(name: str, fraction: float) -> bool:
    """Whether a mutant belongs to the ``fraction`` sample: a hash of its name, so the sample is
    the same in every run and does not depend on which other mutants exist."""
    return zlib.crc32(name.encode()) % 10_000 < fraction * 10_000


def run_mutmut(globs: List[str], max_children: int, rerun: Tuple[str, ...] = (), fraction: float = 1.0,
               new: bool = True) -> float:
    """Test the mutants matching ``globs`` that have no result yet (and those whose last result
    is in ``rerun``, e.g. ``("survived",)`` after the tests changed). mutmut reruns every mutant
    named on its command line, so the pending ones are named one by one; it regenerates the
    mutants of changed functions at the start of each run, hence the loop."""
    t0 = time.time()
    attempts = 0
    while attempts < 3:
        attempts += 1
        results = {n: c for n, c in read_results().items()
                   if any(fnmatch.fnmatchcase(n, g) for g in globs) and in_sample(n, fraction)}
        if not results and attempts == 1:  # never generated: mutmut generates them (and runs them all)
            _mutmut(globs if fraction >= 1 else ["rdfer.__generate_only__*"], max_children)
            continue
        pending = sorted(n for n, c in results.items()
                         if (c is None and new) or (c is not None and STATUS.get(c, "suspicious") in rerun))
        rerun = ()  # once
        if not pending:
            # A source edited since its mutants were made: one run regenerates them (and resets
            # the results of the functions that changed).
            stale = [n for n in results if _source_of(n).stat().st_mtime > _meta_of(n).stat().st_mtime]
            if not stale or attempts > 1:
                break
            pending = stale[:1]
        for start in range(0, len(pending), 400):
            _mutmut(pending[start:start + 400], max_children)
    return time.time() - t0


def _source_of(name: str) -> Path:
    return REPO / (name.rpartition(".x")[0].replace(".", "/") + ".py")


def _meta_of(name: str) -> Path:
    return REPO / "mutants" / (name.rpartition(".x")[0].replace(".", "/") + ".py.meta")


def read_results(root: Path = REPO) -> Dict[str, Optional[int]]:
    """mutant name -> mutmut exit code (None: not run), from mutants/**/*.meta."""
    out: Dict[str, Optional[int]] = {}
    for meta in sorted((root / "mutants" / "rdfer").rglob("*.py.meta")):
        for attempt in range(5):  # mutmut rewrites these files in place while it runs
            try:
                out.update(json.loads(meta.read_text())["exit_code_by_key"])
                break
            except json.JSONDecodeError:
                if attempt == 4:
                    raise
                time.sleep(0.5)
    return out


STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "no tests", 5: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not run"}


def _function_sources(module_file: Path) -> Dict[str, str]:
    """Mutated file -> {function name as in the mutant names: its source}."""
    tree = ast.parse(module_file.read_text())
    lines = module_file.read_text().splitlines()
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
            found[node.name] = "\n".join(lines[node.lineno - 1:node.end_lineno])
    return found


def mutant_diff(name: str, cache: Dict[str, Dict[str, str]], root: Path = REPO) -> Tuple[str, List[str]]:
    """(unified diff, the '+' lines) of one mutant against the original function."""
    module, _, func = name.rpartition(".x")  # rdfer.losses.xǁAgreementLossǁforward__mutmut_3
    func = "x" + func
    path = root / "mutants" / (module.replace(".", "/") + ".py")
    if str(path) not in cache:
        cache[str(path)] = _function_sources(path)
    sources = cache[str(path)]
    base = func.rpartition("__mutmut_")[0]
    orig, mutated = sources.get(base + "__mutmut_orig", ""), sources.get(func, "")
    plain = base.split("ǁ")[-1] if "ǁ" in base else base[2:]  # x_name / xǁClassǁname -> name
    a = [line.replace(base + "__mutmut_orig", plain) for line in orig.splitlines()]
    b = [line.replace(func, plain) for line in mutated.splitlines()]
    diff = [d for d in list(difflib.unified_diff(a, b, lineterm="", n=1))[2:] if not d.startswith("@@")]
    added = [d[1:] for d in diff if d.startswith("+")]
    return "\n".join(diff), added


_DEVICE_ARG = re.compile(r",?\s*(device|map_location)\s*=\s*(None|str\(map_location\)|[\w.]+|\"cpu\")|,\s*(?=\))")
_DEVICE_TO = re.compile(r"\.to\(([\w.]*device[\w.]*|map_location|None)\)")
CPU_ONLY = ("Equivalent on a CPU, the only device of this project's machines and CI: the mutant drops or nulls a "
            "`device=`, `map_location=` or `.to(device)` argument, and the default device is the CPU; on a GPU it would be a real bug (tensors on two "
            "devices), which no test here can run.")


def _generic_equivalent(diff: str) -> Optional[str]:
    """Reasons that hold for a whole class of mutants, recognised from the diff."""
    removed = [d[1:] for d in diff.splitlines() if d.startswith("-")]
    added = [d[1:] for d in diff.splitlines() if d.startswith("+")]
    if len(removed) == len(added) == 1 and ("device" in removed[0] or "map_location" in removed[0]):
        a, b = (_DEVICE_TO.sub(".to()", _DEVICE_ARG.sub("", x)).replace(" ", "") for x in (removed[0], added[0]))
        if a == b:
            return CPU_ONLY
    return None


def _function_of(name: str) -> str:
    return name.partition("__mutmut_")[0]


def summarize(results: Dict[str, Optional[int]], root: Path = REPO, samples: Optional[Dict[str, float]] = None):
    """Per-module counts and score, and every surviving mutant (diff, equivalence reason or None).
    A module in ``samples`` counts only its mutants in that hash sample (:func:`in_sample`), so a
    sampled score is a uniform sample's, whatever else happened to run."""
    cache: Dict[str, Dict[str, str]] = {}
    rows, survivors = [], []
    for module, globs in MODULES.items():
        fraction = (samples or {}).get(module, 1.0)
        names = sorted(n for n in results if any(fnmatch.fnmatchcase(n, g) for g in globs) and in_sample(n, fraction))
        counts = Counter()
        for n in names:
            status = STATUS.get(results[n], "suspicious")
            if status == "survived":
                diff, added = mutant_diff(n, cache, root)
                why = next((EQUIVALENT.get((_function_of(n), a.strip())) for a in added
                            if (_function_of(n), a.strip()) in EQUIVALENT), None) or _generic_equivalent(diff)
                survivors.append(dict(module=module, name=n, diff=diff, equivalent=why))
                status = "equivalent" if why else "survived"
            counts[status] += 1
        run = sum(v for k, v in counts.items() if k != "not run")
        detected = counts["killed"] + counts["timeout"]
        counted = run - counts["equivalent"]
        rows.append(dict(module=module, sample=fraction, mutants=len(names), run=run, killed=counts["killed"], timeout=counts["timeout"],
                         survived=counts["survived"], equivalent=counts["equivalent"], no_tests=counts["no tests"],
                         not_run=counts["not run"], suspicious=counts["suspicious"],
                         score=(detected / counted) if counted else None))
    return rows, survivors


# ---- planted bugs ------------------------------------------------------------------------------


def run_planted(only: Optional[str] = None) -> List[dict]:
    out = []
    for name, file, edits, tests in PLANTED:
        if only and only not in name:
            continue
        with tempfile.TemporaryDirectory(prefix="rdfer-planted-") as tmp:
            root = Path(tmp)
            shutil.copytree(REPO / "rdfer", root / "rdfer", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copytree(REPO / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
            target = root / file
            source = target.read_text()
            missing = [old for old, _ in edits if source.count(old) != 1]
            if missing:
                out.append(dict(name=name, file=file, result="not planted: the code changed", tests=tests))
                print(f"?? {name}: cannot plant, {missing[0]!r} not found once in {file}", flush=True)
                continue
            for old, new in edits:
                source = source.replace(old, new)
            target.write_text(source)
            env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                                  cwd=root, env=env, capture_output=True, text=True)
            failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
            result = "caught" if proc.returncode == 1 and failed else ("SURVIVED" if proc.returncode == 0 else
                                                                        f"error (pytest exit {proc.returncode})")
            out.append(dict(name=name, file=file, result=result, caught_by=failed[:1], tests=tests,
                            seconds=round(time.time() - t0, 1)))
            print(f"{result:>9}  {name}  {failed[:1]}", flush=True)
    return out


# ---- report ------------------------------------------------------------------------------------


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_report(rows, survivors, planted, seconds, command, out_dir: Path, notes: Optional[List[str]] = None) -> str:
    import importlib.metadata

    import torch

    try:
        mutmut_version = importlib.metadata.version("mutmut")
    except importlib.metadata.PackageNotFoundError:  # a report rewritten without mutmut installed
        mutmut_version = "(not installed)"
    total = {k: sum(r[k] for r in rows) for k in ("mutants", "run", "killed", "timeout", "survived", "equivalent",
                                                   "no_tests", "not_run")}
    counted = total["run"] - total["equivalent"]
    total_score = (total["killed"] + total["timeout"]) / counted if counted else None
    lines = [
        "# Mutation testing of rdfer's core",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"mutmut {mutmut_version}, torch {torch.__version__}, {datetime.date.today().isoformat()}"
        + (f"; mutmut wall time {seconds / 60:.0f} min." if seconds else "."),
        "",
        "How: `benchmarks/mutation.py` (run by `make mutation`; not in CI, it is slow). mutmut makes one-line "
        "changes (operators, constants, arguments, strings) in every function of the modules below and runs, for "
        "each, the tests that call that function (files listed in `[tool.mutmut]`, pyproject.toml). A mutant is "
        "*killed* when a test fails. Score = (killed + timed out) / (mutants run - equivalent); *no tests* and "
        "*survived* count against it.",
        "",
        "| module | generated | run | killed | timed out | survived | equivalent | no tests | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f" ({100 * r['sample']:.0f}% sample)" if r.get("sample", 1.0) < 1 else ""
        lines.append(f"| `{r['module']}`{share} | {r['mutants']} | {r['run']} | {r['killed']} | {r['timeout']} | "
                     f"{r['survived']} | {r['equivalent']} | {r['no_tests']} | {_pct(r['score'])} |")
    lines.append(f"| **all** | {total['mutants']} | {total['run']} | {total['killed']} | {total['timeout']} | "
                 f"{total['survived']} | {total['equivalent']} | {total['no_tests']} | **{_pct(total_score)}** |")
    if total["not_run"]:
        lines += ["", f"{total['not_run']} generated mutants were not run (see the notes)."]
    lines += ["", NOTES.strip()] + [f"- {note}" for note in notes or []]
    lines += ["", "## Planted bugs", "",
              "Bugs planted by hand, one at a time, in a copy of the package: the six that survived the suite "
              "before issue 18, the resume bug it caught only indirectly, and bugs in code mutmut does not "
              "mutate (decorated functions: `atomic_path`, `AgreementLoss.step_epoch`/`_remember`/`active`, "
              "`RDFER.predict`; module-level tables such as `SEQUENCE_MODELS`; the training loop).", "",
              "| bug | file | result | first failing test |", "|---|---|---|---|"]
    for p in planted:
        lines.append(f"| {p['name']} | `{p['file']}` | {p['result']} | {', '.join(f'`{t}`' for t in p.get('caught_by', []))} |")
    survived = [s for s in survivors if not s["equivalent"]]
    equivalent = [s for s in survivors if s["equivalent"]]
    lines += ["", f"## Surviving mutants ({len(survived)})", ""]
    if not survived:
        lines += ["None.", ""]
    for s in survived:
        lines += [f"`{s['name']}`", "", "```diff", s["diff"], "```", ""]
    lines += [f"## Equivalent mutants ({len(equivalent)})", "",
              "Mutants that survive because they cannot change what the code computes; excluded from the score.", ""]
    for s in equivalent:
        lines += [f"`{s['name']}`: {s['equivalent']}", "", "```diff", s["diff"], "```", ""]
    text = "\n".join(lines).rstrip() + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "mutation.md", text)
    atomic_write_text(out_dir / "mutation.json", json.dumps(dict(
        command=command, date=datetime.date.today().isoformat(), mutmut_seconds=seconds, modules=rows,
        score=total_score, survivors=survivors, planted=planted, notes=list(notes or [])), indent=2) + "\n")
    return text


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=list(MODULES), help="only this module's mutants (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="no runs: rewrite the report from mutants/")
    parser.add_argument("--skip-mutmut", action="store_true", help="run only the planted bugs")
    parser.add_argument("--skip-planted", action="store_true", help="run only mutmut")
    parser.add_argument("--planted", action="append", default=[], metavar="TEXT",
                        help="run only the planted bugs whose name contains TEXT (repeatable)")
    parser.add_argument("--max-children", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="mutants tested at the same time")
    parser.add_argument("--sample", type=float, default=1.0,
                        help="test only this fraction of each module's mutants (a fixed hash sample; default all)")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="test the mutants that survived last time again (after the tests changed)")
    parser.add_argument("--no-new", action="store_true", help="with --rerun-survivors: only those, no untested mutant")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
    command = "python benchmarks/mutation.py " + shlex.join(shown) + (" --note ..." if "--note" in given else "")
    seconds = 0.0
    previous = args.out / "mutation.json"
    last = json.loads(previous.read_text()) if previous.is_file() else {}
    # The sample each module was last measured on; a module run now takes this run's --sample.
    samples = {r["module"]: r.get("sample", 1.0) for r in last.get("modules", [])}
    if not args.report_only and not args.skip_mutmut:
        for module in args.module or list(MODULES):
            rerun = ("survived", "timeout", "suspicious", "no tests") if args.rerun_survivors else ()
            seconds += run_mutmut(MODULES[module], args.max_children, rerun, args.sample, new=not args.no_new)
            if not args.rerun_survivors:
                samples[module] = args.sample
    planted = last.get("planted", [])
    notes = args.note or last.get("notes", [])  # a run without --note keeps the last run's notes
    if not args.report_only and not args.skip_planted:
        if args.planted:  # rerun only these; the others keep their last result
            fresh = [r for only in args.planted for r in run_planted(only)]
            names = {r["name"] for r in fresh}
            order = [name for name, *_ in PLANTED]
            planted = sorted([r for r in planted if r["name"] not in names] + fresh,
                             key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        else:
            planted = run_planted()
    rows, survivors = summarize(read_results(), samples=samples)
    print(write_report(rows, survivors, planted, seconds, command.strip(), args.out, notes))


if __name__ == "__main__":
    main()
