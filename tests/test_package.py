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


def test_scoring_with_ifqa_imports_neither_torchvision_nor_dynamo():
    """Both cost ~2 s of every CLI start-up on 2 cores (torchvision imports torch._dynamo): GFIQA's ResNet and
    torch.compile import them when used, IFQA scoring never needs them."""
    code = ("import json, sys, torch; from ifqa_loss import load_metric; "
            "load_metric('ifqa', random_weights=True)(torch.rand(1, 3, 64, 64)); "
            "print(json.dumps(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules)))")
    loaded = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == []


def test_benchmarks_folder_is_not_an_installed_package():
    code = "import importlib.util; print(importlib.util.find_spec('benchmarks'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert found.stdout.strip() == "None"
