"""Every repo-relative path the docs and docstrings name exists (README, RESULTS, docs/, integrations READMEs)."""
from __future__ import annotations

import ast
import glob
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOTS = ("ifqa_loss", "tests", "docs", "benchmarks", "integrations", ".ci")


def path_pattern(roots) -> re.Pattern:
    """A path that starts at one of ``roots`` (folder names), e.g. `docs/gfiqa.md`, results/cpu_{a,b}.json."""
    alternatives = "|".join(re.escape(r) for r in roots)
    return re.compile(r"(?<![\w./~$-])((?:" + alternatives + r")/[\w.*{},/+-]*[\w*}])")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # markdown link targets
# what follows an output option is a file a command will write, not one the repository must hold
OUTPUT_OPTION = re.compile(r"(?:--json|--plot|--out|--maps|-o|>)\s*$")
TOP_FILES = re.compile(r"(?<![\w/.-])(README\.md|setup\.cfg|pyproject\.toml)(?![\w/])")


def documents() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "integrations").rglob("README.md"))]
    return [f for f in files if f.exists()]


def docstrings(path: Path) -> str:
    tree = ast.parse(path.read_text())
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef))]
    return "\n".join(ast.get_docstring(n) or "" for n in nodes)


def expand(pattern: str) -> list[str]:
    """Brace alternatives, as the shell: ``cpu.{json,png}`` -> ``cpu.json``, ``cpu.png``."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    options = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def exists(candidate: Path) -> bool:
    text = str(candidate)
    return bool(glob.glob(text)) if "*" in text else candidate.exists()


def named_paths(text: str, base: Path) -> set[tuple[str, Path]]:
    """(as written, resolved) for each repo path in ``text``: paths from a top-level folder resolve against the
    root, paths from a subfolder of the document's folder (RESULTS.md's ``results/``) and links against ``base``."""
    found = set()
    local = [d.name for d in base.iterdir() if d.is_dir() and d.name not in ROOTS] if base != ROOT else []
    for pattern, anchor in ((path_pattern(ROOTS), ROOT), (path_pattern(local) if local else None, base)):
        for match in pattern.finditer(text) if pattern else ():
            if OUTPUT_OPTION.search(text[max(0, match.start() - 12):match.start()]):
                continue
            for path in expand(match.group(1).rstrip(".,")):
                found.add((path, anchor / path))
    for match in TOP_FILES.finditer(text):
        found.add((match.group(1), ROOT / match.group(1)))
    for match in LINK.finditer(text):
        target = match.group(1)
        if "://" in target or target.startswith(("mailto:", "/")):
            continue
        found.add((target, (base / target).resolve()))
    return found


def cases():
    for doc in documents():
        yield pytest.param(doc.read_text(), doc.parent, id=str(doc.relative_to(ROOT)))
    for source in sorted((ROOT / "ifqa_loss").rglob("*.py")):
        yield pytest.param(docstrings(source), ROOT, id=str(source.relative_to(ROOT)))


@pytest.mark.parametrize(("text", "base"), list(cases()))
def test_every_named_path_exists(text, base):
    missing = sorted(written for written, resolved in named_paths(text, base) if not exists(resolved))
    assert not missing, f"named but not in the repository: {missing}"


def test_the_checker_finds_a_missing_file_and_accepts_braces_and_links():
    text = ("see `benchmarks/results/nope_{a,b}.json`, [the api](docs/api.md) and `docs/*.md`; "
            "`ifqa-loss bench --json benchmarks/results/new.json` writes a file")
    found = dict(named_paths(text, ROOT))
    assert set(found) == {"benchmarks/results/nope_a.json", "benchmarks/results/nope_b.json", "docs/api.md",
                          "docs/*.md"}
    assert sorted(w for w, p in found.items() if not exists(p)) == ["benchmarks/results/nope_a.json",
                                                              "benchmarks/results/nope_b.json"]
