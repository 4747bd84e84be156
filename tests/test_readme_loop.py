"""The README's plain training loop runs as written (the block is read from README.md, so the docs cannot drift)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _plain_loop_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- plain-loop -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its <!-- plain-loop --> python block"
    return match.group(1)


def test_readme_plain_loop_runs_and_saves_only_the_generator(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(_plain_loop_block())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.findall(r"step (\d+): l1 [0-9.]+  ifqa [0-9.]+", done.stdout) == ["0", "1"]
    assert "RANDOM" in done.stderr.upper()  # the random-weights mode said so
    saved = torch.load(tmp_path / "restorer_ckpt.pt", weights_only=True)
    assert sorted(saved) == ["generator", "optimizer", "step"]
    assert all(key.split(".")[0] in ("0", "2") for key in saved["generator"])  # the two convs, nothing else
