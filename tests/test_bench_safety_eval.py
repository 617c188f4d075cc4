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
