"""The README's Python block runs as written, on a table of its own (features s0-s2, score y, context ctx)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_block_runs(tmp_path, monkeypatch, potts_frame):
    block = re.search(r"## Python\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    potts_frame.to_csv(tmp_path / "table.csv", index=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "py" / "run.json").is_file()


def _section(heading: str) -> str:
    """The README's text from `heading` (e.g. "## Python") to the next heading."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    return text[start:text.index("\n##", start + 1)]


def test_readme_own_score_model_examples_run(tmp_path, monkeypatch):
    """'Your own score model': sim.py and the shell lines (the choicegrad ones through the CLI in this
    process), then the torch estimator block."""
    import shlex
    import subprocess

    import pandas as pd

    from cli_helpers import run

    section = _section("## Your own score model, no table needed")
    sim, own = re.findall(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sim.py").write_text(sim)
    for line in shell.strip().splitlines():
        if line.startswith("choicegrad "):
            result = run(*shlex.split(line)[1:])
            assert result.exit_code == 0, (line, result.output)
        else:
            subprocess.run(["bash", "-c", line], check=True, cwd=tmp_path)
    best = pd.read_csv(tmp_path / "best.csv")
    top = best[best["rank"] == 1].set_index("user")
    assert top.loc["ann", ["colour", "size", "shape"]].tolist() == ["red", "L", "cube"]
    assert top.loc["bob", "score"] == 3.5
    exec(compile(own, "README.md", "exec"), {"print": lambda *a, **k: None})
    assert (tmp_path / "runs" / "own" / "run.json").is_file()


def test_readme_partial_rows_example_runs(tmp_path, monkeypatch):
    import pandas as pd

    block = re.search(r"```python\n(.*?)```", _section("### Rows with missing features"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    shown = []
    exec(compile(block, "README.md", "exec"), {"print": shown.append})
    top = shown[-1]
    assert isinstance(top, pd.DataFrame) and (top.f1 == top.f2).all() and (top.f3 == "d").all()


def test_readme_pick_five_example_runs(tmp_path, monkeypatch):
    """'Item lists': seed 001's "pick the 5" as written: a 5 in every slot of 1,000 unseen lists."""
    block = re.findall(r"```python\n(.*?)```", _section("## Item lists: one item per slot, items never seen included"),
                       re.S)[0]
    monkeypatch.chdir(tmp_path)
    shown = []
    exec(compile(block, "README.md", "exec"), {"print": shown.append})
    assert float(shown[-1]) == 1.0
