"""The layering the design states, checked on every run: decision logic and policy
handling never reach for the transport or the cluster, so the server and the CLI
cannot disagree and the engine stays a pure function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "webhook"
# package folder -> modules it must never import
FORBIDDEN = {
    "engine": ("aiohttp", "kubernetes", "webhook.server", "webhook.serve", "webhook.cli", "webhook.workers"),
    "policy": ("aiohttp", "kubernetes", "webhook.server", "webhook.serve", "webhook.engine", "webhook.cli"),
    "rules": ("aiohttp", "kubernetes", "webhook.server", "webhook.serve", "webhook.engine", "webhook.cli"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


CASES = [(folder, path) for folder in FORBIDDEN for path in sorted((PACKAGE / folder).rglob("*.py"))]


@pytest.mark.parametrize(("folder", "path"), CASES, ids=[f"{f}/{p.name}" for f, p in CASES])
def test_layer_does_not_import_what_sits_above_it(folder: str, path: Path) -> None:
    bad = {name for name in _imports(path) for banned in FORBIDDEN[folder]
           if name == banned or name.startswith(banned + ".")}
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"
