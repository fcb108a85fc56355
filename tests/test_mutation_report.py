"""benchmarks/mutation.py's report: scores, survivor diffs and equivalent mutants, read from a
small mutants/ tree laid out the way mutmut writes it."""

import json
import sys
import textwrap

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import mutation  # noqa: E402

MUTATED = textwrap.dedent('''
    def x_eval_indices__mutmut_orig(num_source, num_frames):
        i = torch.arange(num_frames, dtype=torch.float64)
        return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)
    def x_eval_indices__mutmut_1(num_source, num_frames):
        i = torch.arange(num_frames, dtype=torch.float64)
        return ((i - 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)
    def x_eval_indices__mutmut_2(num_source, num_frames):
        i = torch.arange(num_frames, dtype=torch.float64)
        return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, None)
    def x_eval_indices__mutmut_3(num_source, num_frames):
        i = torch.arange(num_frames, dtype=None)
        return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)
    def x_eval_indices__mutmut_4(num_source, num_frames):
        i = torch.arange(num_frames, dtype=torch.float64)
        return ((i + 1.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)
    def x_eval_indices__mutmut_5(num_source, num_frames):
        i = torch.arange(num_frames, dtype=torch.float64)
        return ((i + 0.5) * num_source * num_frames).floor().long().clamp_(0, num_source - 1)
    def x_eval_indices__mutmut_6(num_source, num_frames):
        return None
''')


def _tree(tmp_path, codes):
    folder = tmp_path / "mutants" / "rdfer" / "data"
    folder.mkdir(parents=True)
    (folder / "sampling.py").write_text(MUTATED)
    keys = {f"rdfer.data.sampling.x_eval_indices__mutmut_{k}": v for k, v in codes.items()}
    (folder / "sampling.py.meta").write_text(json.dumps({"exit_code_by_key": keys}))


def test_scores_survivors_and_equivalents(tmp_path):
    # 1 killed, 2 survived but equivalent (the clamp), 3 survived, 4 timed out, 5 no tests, 6 not run
    _tree(tmp_path, {1: 1, 2: 0, 3: 0, 4: -24, 5: 33, 6: None})
    results = mutation.read_results(tmp_path)
    assert len(results) == 6
    rows, survivors = mutation.summarize(results, tmp_path)
    row = next(r for r in rows if r["module"] == "rdfer/data/sampling.py")
    assert (row["run"], row["killed"], row["timeout"], row["survived"], row["equivalent"], row["no_tests"],
            row["not_run"]) == (5, 1, 1, 1, 1, 1, 1)
    assert row["score"] == 2 / 4  # (killed + timed out) / (run - equivalent)
    assert [s["name"].rsplit("_", 1)[1] for s in survivors] == ["2", "3"]
    equivalent, survivor = survivors
    assert equivalent["equivalent"].startswith("The clamp never binds")
    assert survivor["equivalent"] is None
    assert survivor["diff"].splitlines() == [
        " def eval_indices(num_source, num_frames):",
        "-    i = torch.arange(num_frames, dtype=torch.float64)",
        "+    i = torch.arange(num_frames, dtype=None)",
        "     return ((i + 0.5) * num_source / num_frames).floor().long().clamp_(0, num_source - 1)",
    ]
    other = next(r for r in rows if r["module"] == "rdfer/losses/")
    assert other["run"] == 0 and other["score"] is None


def test_report_lists_everything(tmp_path):
    _tree(tmp_path, {1: 1, 2: 0, 3: 0, 4: -24, 5: 33, 6: None})
    rows, survivors = mutation.summarize(mutation.read_results(tmp_path), tmp_path)
    planted = [dict(name="mu divided by T", file="rdfer/model/sampler.py", result="caught",
                    caught_by=["tests/test_model_layout.py::test_position_formula_hand_case"])]
    text = mutation.write_report(rows, survivors, planted, 60.0, "python benchmarks/mutation.py", tmp_path / "out")
    assert (tmp_path / "out" / "mutation.md").read_text() == text
    assert "| `rdfer/data/sampling.py` | 6 | 5 | 1 | 1 | 1 | 1 | 1 | 50.0% |" in text
    assert "| mu divided by T | `rdfer/model/sampler.py` | caught | `tests/test_model_layout.py::test_position_formula_hand_case` |" in text
    assert "## Surviving mutants (1)" in text and "`rdfer.data.sampling.x_eval_indices__mutmut_3`" in text
    assert "## Equivalent mutants (1)" in text and "1 generated mutants were not run" in text
    saved = json.loads((tmp_path / "out" / "mutation.json").read_text())
    assert saved["score"] == 0.5 and saved["planted"] == planted
