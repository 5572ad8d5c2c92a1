"""The stage rule and the architecture page: media flows publisher -> ingest -> encoder
-> packager; no stage imports a later stage or `api/` (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each stage, and what it may import of onair (besides itself).
ALLOWED = {
    "media": set(),
    "ingest": {"media"},
    "encoder": {"media", "ingest"},
    "packager": {"media"},
    "vod": {"media", "ingest", "encoder", "packager"},
    # A reader of the live's source track (and of the ladder's, for an HEVC source).
    "restream": {"media", "ingest", "encoder"},
    # A WebSocket viewer: a reader of the source track or of the ladder's.
    "viewer": {"media", "ingest", "encoder"},
}
PACKAGES = {"media", "ingest", "encoder", "packager", "vod", "restream", "viewer", "api"}


def onair_imports(path: Path) -> set[str]:
    """The onair packages a module imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_no_stage_imports_a_later_stage_or_the_api(stage: str) -> None:
    modules = sorted((ROOT / stage).rglob("*.py"))
    assert modules
    wrong = {
        str(path.relative_to(ROOT)): sorted(onair_imports(path) - ALLOWED[stage] - {stage})
        for path in modules
    }
    assert {module: names for module, names in wrong.items() if names} == {}


def test_the_stage_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from packager.hls import HlsWriter\n    import api.app\n")
    assert onair_imports(module) == {"packager", "api"}


def test_every_module_the_architecture_page_names_exists() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:media|ingest|encoder|packager|api)(?:\.\w+)+)", page))
    assert len(named) > 20
    missing = []
    for dotted in sorted(named):
        parts = dotted.split(".")
        # the longest prefix that is a module or package; the rest are its attributes
        for cut in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:cut])
            if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                module = base.with_suffix(".py") if base.with_suffix(".py").exists() else None
                rest = parts[cut:]
                if rest and module is not None:
                    source = module.read_text()
                    if not re.search(rf"\b(class|def)\s+{rest[0]}\b|^{rest[0]}\b", source, re.M):
                        missing.append(dotted)
                break
        else:
            missing.append(dotted)
    assert missing == []
    for package in PACKAGES:
        assert f"`{package}/`" in page


def test_imports(path: Path) -> list[str]:
    """What a test file imports of `tests` other than `tests.support` (relative imports,
    which can only reach other test modules or a conftest, included)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            names = ["." * node.level + (node.module or "")]
        elif isinstance(node, ast.ImportFrom) and node.module == "tests":
            names = [f"tests.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        found += [
            name
            for name in names
            if name.startswith(".")
            or name.split(".")[0] in {"tests", "conftest"}
            or name.split(".")[0].startswith("test_")
        ]
    return [name for name in found if not re.fullmatch(r"tests\.support(\.\w+)*", name)]


test_imports.__test__ = False  # type: ignore[attr-defined]


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    """Shared test code lives in `tests/support`; conftest.py files hold fixtures only."""
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert len(files) > 50
    wrong = {str(path.relative_to(ROOT)): test_imports(path) for path in files}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_test_import_check_sees_a_wrong_import(tmp_path: Path) -> None:
    module = tmp_path / "test_m.py"
    module.write_text(
        "from tests.test_live_e2e import Live\n"
        "from tests.api.conftest import Api\n"
        "from tests.support.service import Live\n"
        "from .helpers import x\n"
        "def f():\n    import tests.conftest\n    from tests import support, players\n"
    )
    assert sorted(test_imports(module)) == sorted(
        ["tests.test_live_e2e", "tests.api.conftest", ".helpers", "tests.conftest", "tests.players"]
    )
