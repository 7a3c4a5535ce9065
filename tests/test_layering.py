"""Imports point one way (DESIGN.md, "Layout and layering"); this walks them and fails on a wrong edge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "clients", "service", "encoders", "cache", "llm_core")

# Which of our packages each package may import.
ALLOWED = {
    "protocol": set(),
    "clients": {"protocol"},
    "service": {"protocol", "llm_core", "encoders"},
    "encoders": {"cache", "protocol"},
    "cache": set(),
    "llm_core": {"cache", "encoders", "protocol"},
}
# The service may use only these torch-free parts of llm_core and encoders.
SERVICE_MAY_IMPORT = ("llm_core.client", "llm_core.engine_client", "llm_core.sampling_params",
                      "llm_core.protocol", "encoders.media", "encoders.config", "protocol",
                      "llm_core.structured.grammar_spec", "llm_core.structured.errors",
                      "encoders.encoder_config")
# Third-party modules a package may not import.
FORBIDDEN_THIRD_PARTY = {
    "protocol": {"torch", "numpy", "triton", "PIL", "av"},
    "cache": {"torch", "triton"},
    "service": {"torch", "triton", "torchaudio"},
    "clients": {"torch", "triton"},
}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def _violations() -> list[str]:
    bad = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            cache_bookkeeping = package == "cache"
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    if top not in ALLOWED[package]:
                        bad.append(f"{rel}:{line} imports {module} ({package} may not import {top})")
                    elif package == "service" and not module.startswith(SERVICE_MAY_IMPORT):
                        bad.append(f"{rel}:{line} imports {module} (the service uses only {SERVICE_MAY_IMPORT})")
                if top in FORBIDDEN_THIRD_PARTY.get(package, ()) and not (cache_bookkeeping and
                                                                          path.name == "embedding_store.py"):
                    bad.append(f"{rel}:{line} imports {module} ({package} must not import {top})")
    return bad


def test_import_edges_follow_the_design():
    assert _violations() == []


def test_walker_sees_a_wrong_edge(tmp_path, monkeypatch):
    # The check itself must be able to fail: plant a bad import in a copy of the tree.
    fake = tmp_path / "cache"
    fake.mkdir()
    (fake / "bad.py").write_text("import llm_core.scheduler\nimport torch\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    found = _violations()
    assert len(found) == 2 and "cache may not import llm_core" in found[0]


def test_torch_free_modules_do_not_load_torch():
    code = ("import sys, llm_core, llm_core.scheduler, llm_core.sampling_params, cache, protocol; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_engine_imports_without_pyav():
    # The GPU benchmark machine has no PyAV: the engine must import (and run text) without it.
    code = ("import sys; sys.modules['av'] = None; import llm_core.engine, llm_core.multimodal, encoders.media.errors; "
            "assert 'av' not in [m for m in sys.modules if sys.modules[m] is not None]")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
