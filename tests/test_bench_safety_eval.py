"""bench/safety_eval.py's run directories: evaluations started side by side never share one."""

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from safety_eval import claim_run_dir  # noqa: E402


def test_same_second_starts_get_a_directory_each(tmp_path):
    name = tmp_path / "runs" / "safety-eval-20261127-184053"
    with ThreadPoolExecutor(4) as pool:
        claimed = list(pool.map(lambda _: claim_run_dir(name), range(6)))
    assert len(set(claimed)) == 6
    assert sorted(p.name for p in claimed) == sorted(
        ["safety-eval-20261127-184053"] + [f"safety-eval-20261127-184053-{i}" for i in range(2, 7)])
    assert all(p.is_dir() and not any(p.iterdir()) for p in claimed)  # empty: `ppo-term run` takes it


def test_base_rows_are_reused_only_for_the_same_prompts(tmp_path):
    import json
    from types import SimpleNamespace

    import pytest

    from safety_eval import base_rows

    run = tmp_path / "run"
    run.mkdir()
    rows = [{"model": m, "prompt": p, "refused": m == "tuned"} for m in ("base", "tuned") for p in ("a", "b")]
    (run / "xstest_eval_rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = [SimpleNamespace(prompt="a"), SimpleNamespace(prompt="b")]
    assert base_rows(run, items) == [{"prompt": "a", "refused": False}, {"prompt": "b", "refused": False}]
    with pytest.raises(SystemExit, match="other prompts"):
        base_rows(run, items[:1])
    with pytest.raises(SystemExit, match="no xstest_eval_rows.jsonl"):
        base_rows(tmp_path, items)
