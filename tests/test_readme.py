"""The README's Python block runs as written, on a table of its own (features s0-s2, score y, context ctx)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_block_runs(tmp_path, monkeypatch, potts_frame):
    block = re.search(r"## Python\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    potts_frame.to_csv(tmp_path / "table.csv", index=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "py" / "generator.safetensors").is_file()
