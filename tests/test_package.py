"""What `import ifqa_loss` costs and promises."""
import json
import subprocess
import sys

OPTIONAL = ["basicsr", "gfpgan", "matplotlib", "scipy", "lpips", "yaml", "cv2", "tensorboard", "diffusers", "peft"]


def test_import_loads_no_optional_package():
    code = ("import json, sys, ifqa_loss; "
            f"print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    assert loaded == []


def test_benchmarks_folder_is_not_an_installed_package():
    code = "import importlib.util; print(importlib.util.find_spec('benchmarks'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert found.stdout.strip() == "None"
