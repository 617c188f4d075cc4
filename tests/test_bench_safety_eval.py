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


def test_seeds_are_read_as_ranges_and_lists():
    import pytest

    from safety_eval import parse_seeds

    assert parse_seeds("0-5") == [0, 1, 2, 3, 4, 5]
    assert parse_seeds("3,1, 7") == [3, 1, 7]
    assert parse_seeds("0-2,9") == [0, 1, 2, 9]
    for bad in ("a", "0-", "1,1", "2-1"):
        with pytest.raises(SystemExit, match="--seeds"):
            parse_seeds(bad)


def _fake_train(monkeypatch, tmp_path, fail_seed=None):
    """`ppo-term run` replaced by a script that records its seed, its run directory and when it ran."""
    import safety_eval

    script = tmp_path / "fake_run.py"
    script.write_text(
        "import json, os, sys, time\n"
        "run = sys.argv[sys.argv.index('--run-dir') + 1]\n"
        "seed = [a for a in sys.argv if a.startswith('seed=')][-1][5:]\n"
        "start = time.time(); time.sleep(0.5)\n"
        "open(os.path.join(run, 'ran.json'), 'w').write(json.dumps({'seed': int(seed), 'start': start,\n"
        "    'end': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS'), 'argv': sys.argv[1:]}))\n"
        f"sys.exit(3 if seed == {str(fail_seed)!r} else 0)\n")
    monkeypatch.setattr(safety_eval, "train_command",
                        lambda recipe, overrides, run: [sys.executable, str(script), recipe, "--run-dir", str(run)]
                        + [a for o in overrides for a in ("--set", o)])
    return safety_eval


def test_train_seeds_runs_each_seed_in_its_own_directory_at_most_parallel_at_once(monkeypatch, tmp_path):
    import json
    import os

    safety_eval = _fake_train(monkeypatch, tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    members = safety_eval.train_seeds("r.toml", ["kl.coef=0.1"], [4, 0, 7], 2, tmp_path / "runs", "stamp")
    assert [m["seed"] for m in members] == [4, 0, 7]  # in the order asked for
    ran = [json.loads((m["run"] / "ran.json").read_text()) for m in members]
    assert [r["seed"] for r in ran] == [4, 0, 7]
    assert [m["run"].name for m in members] == ["safety-eval-stamp-seed4", "safety-eval-stamp-seed0",
                                                "safety-eval-stamp-seed7"]
    assert all(r["argv"][-4:-2] == ["--set", "kl.coef=0.1"] for r in ran)  # the user's overrides, then the seed
    assert {r["threads"] for r in ran} == {"2"}  # the CPU's 4 threads shared by 2 side by side
    # never more than two at once: the third started after one of the first two ended
    assert ran[2]["start"] >= min(ran[0]["end"], ran[1]["end"])
    assert ran[1]["start"] < ran[0]["end"]  # but the first two did run side by side
    assert all(m["train_seconds"] >= 0.5 for m in members)


def test_a_failing_member_stops_the_soup_and_names_its_run(monkeypatch, tmp_path):
    import pytest

    safety_eval = _fake_train(monkeypatch, tmp_path, fail_seed=1)
    with pytest.raises(SystemExit, match=r"seed 1: `ppo-term run` exited 3 \(its run directory: .*seed1\)"):
        safety_eval.train_seeds("r.toml", [], [0, 1], 1, tmp_path / "runs", "stamp")
    assert (tmp_path / "runs" / "safety-eval-stamp-seed0" / "ran.json").is_file()  # what ran before stays


def test_stopping_the_proof_stops_its_training_run(tmp_path):
    """SIGTERM to `bench/safety_eval.py` stops the `ppo-term run` it waits on instead of orphaning it."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ppo-term"
    fake.write_text(f"#!{sys.executable}\nimport os, time\n"
                    f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proof = subprocess.Popen([sys.executable, str(root / "bench/safety_eval.py"), "--out", str(tmp_path / "out"),
                              "--runs-dir", str(tmp_path / "runs")],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (tmp_path / "pid").is_file() or not (tmp_path / "pid").read_text():
        assert time.time() < deadline and proof.poll() is None, "the fake training run never started"
        time.sleep(0.1)
    child = int((tmp_path / "pid").read_text())
    proof.send_signal(signal.SIGTERM)
    assert proof.wait(timeout=30) != 0
    try:
        os.kill(child, signal.SIGKILL)  # still there: the proof orphaned it (killed, not to outlive the test)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the training run outlived the proof"
