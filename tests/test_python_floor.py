"""setup.cfg promises Python >= 3.10: every module parses with 3.10's grammar and uses no 3.11-only names."""
import ast
import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "ifqa_loss").rglob("*.py"))
# Names added in 3.11+ that a 3.10 interpreter lacks (stdlib attributes and modules).
NEWER_NAMES = re.compile(r"\bdatetime\.UTC\b|\btomllib\b|\bStrEnum\b|\btyping\.Self\b|\bfrom typing import .*\bSelf\b"
                         r"|\bExceptionGroup\b|\bTaskGroup\b|\bLiteralString\b|\bassert_never\b|\bNotRequired\b")


def test_floor_is_310():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options"]["python_requires"].strip() == ">=3.10"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_parses_with_python_310_grammar_and_names(path):
    source = path.read_text()
    ast.parse(source, filename=str(path), feature_version=(3, 10))
    assert not NEWER_NAMES.findall(source), f"{path}: uses names newer than Python 3.10"
