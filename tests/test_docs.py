"""The docs in docs/ are generated from the code and kept true."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "docs" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    generated = _load("make_api_reference").render()
    assert (ROOT / "docs" / "api.md").read_text() == generated, "run: python docs/make_api_reference.py"


def test_architecture_names_every_package_room():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rooms = [p for p in (ROOT / "ifqa_loss").iterdir() if (p.is_dir() and (p / "__init__.py").exists())
             or (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))]
    missing = [p.name for p in rooms if f"ifqa_loss/{p.name}" not in text]
    assert not missing, f"docs/architecture.md has no line for {missing}"


def _readme_test_command() -> str:
    """The command under the README's "run the whole test suite" comment (first-hour block)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# ") and "whole test suite" in line)
    return next(line.strip() for line in lines[start + 1:] if line.strip() and not line.startswith("#"))


def test_ci_runs_exactly_the_readme_test_command():
    import shlex

    readme = _readme_test_command()
    assert "python -m pytest" in readme and readme.rstrip().endswith("tests")  # the full suite, not a subset
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if "pytest" in line and not line.lstrip().startswith("#") and "echo" not in line]
    assert len(ci) == 1, f".ci/run should run pytest once, found {ci}"
    assert shlex.split(ci[0]) == shlex.split(readme), f".ci/run: {ci[0]!r}\nREADME: {readme!r}"


def test_readme_preprocessing_table_is_the_scripts_output_format():
    script = _load("measure_preprocess_paths")
    text = (ROOT / "README.md").read_text()
    assert text.count(script.BEGIN) == 1 and text.count(script.END) == 1, "README lost its table markers"
    block = text.split(script.BEGIN)[1].split(script.END)[0].strip().splitlines()
    assert block[:2] == script.HEADER, "regenerate: python docs/measure_preprocess_paths.py --readme"
    assert [line.split("|")[1].strip() for line in block[2:]] == [f"{w}×{h}" for w, h in script.SIZES]
    assert all(len(line.split("|")) == 6 for line in block[2:])


def test_input_domain_variants_keep_the_frame_and_the_value_range():
    import torch

    script = _load("measure_input_domain")
    face = torch.rand(3, 64, 64)
    out = script.variants(face, torch.Generator().manual_seed(0))
    assert len(out) == 10 and torch.equal(out["aligned"], face)
    assert all(v.shape == face.shape and 0 <= v.min() and v.max() <= 1 for v in out.values())
    assert not torch.allclose(out["rotated 30°"], face) and not torch.allclose(out["two faces"], face)
