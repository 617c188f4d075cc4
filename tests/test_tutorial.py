"""Follows docs/writing-a-reward-plugin.md: scaffold, install as a package, list, use in a recipe."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args, env, **kw):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, **kw)


def test_tutorial_from_empty_folder_to_a_recipe(tmp_path, tiny_model):
    doc = (ROOT / "docs" / "writing-a-reward-plugin.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    cli = [sys.executable, "-m", "ppo_term"]

    # 1. scaffold, as the tutorial says
    assert "ppo-term new-plugin politeness --kind reward --dir ." in doc
    made = run(cli + ["new-plugin", "politeness", "--kind", "reward", "--dir", str(tmp_path)], env)
    assert made.returncode == 0, made.stderr
    pkg = tmp_path / "ppo-term-politeness"
    assert {p.name for p in pkg.iterdir()} == {"pyproject.toml", "ppo_term_politeness", "tests", "README.md"}
    assert "class Politeness(Reward)" in (pkg / "ppo_term_politeness" / "__init__.py").read_text()
    # 2. write the reward: the tutorial's code block becomes the module
    code = re.search(r"## 2\. Write the reward.*?```python\n(.*?)```", doc, re.S).group(1)
    (pkg / "ppo_term_politeness" / "__init__.py").write_text(code)

    # 3. install it as a package (into a private target instead of site-packages) and list it
    installed = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                     "--target", str(tmp_path / "site"), str(pkg)], env)
    assert installed.returncode == 0, installed.stderr
    listed = json.loads(run(cli + ["plugins", "--json"], env).stdout)
    (row,) = [p for p in listed["plugins"] if p["name"] == "politeness"]
    assert row == {**row, "kind": "reward", "package": "ppo-term-politeness", "version": "0.1.0", "builtin": False}
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")], env, cwd=pkg)
    assert tests.returncode == 0, tests.stdout + tests.stderr

    # 4. use it by name in a recipe; it shows up in the per-component metrics
    recipe = tmp_path / "my-recipe.toml"
    recipe.write_text(f'''model = "{tiny_model}"
steps = 1
[generation]
n = 2
max_new_tokens = 4
[ppo]
batch_prompts = 2
minibatch = 4
epochs = 1
[[rewards]]
name = "politeness"
weight = 0.5
word = "please"
[[rewards]]
name = "keywords"
include = ["yes"]
[prompts]
items = ["say yes", "say please"]
''')
    done = run(cli + ["run", str(recipe), "--headless", "--run-dir", str(tmp_path / "run")], env)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/politeness" in metrics and "reward/keywords" in metrics
