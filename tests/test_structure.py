"""The package's shape: no import cycles, a light inference import, small modules, docs that exist.

These check the structure docs/design.md describes, so that it cannot drift silently.
"""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "asmp_jax"
MAX_MODULE_LINES = 500


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
  """Every asmp_jax module `path` imports, at module level or inside functions."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      targets = [base] + [f"{base}.{a.name}" for a in node.names]
    for t in targets:
      while t and t not in known:
        t = t.rpartition(".")[0]
      if t and t != name:
        found.add(t)
  return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph[n]):
      if state.get(m) == 1:
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    stack.pop()
    state[n] = 2
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_no_import_cycle_counting_function_level_imports():
  mods = _modules()
  known = set(mods)
  # A package's __init__ importing its own submodules is not a cycle between modules.
  graph = {n: {m for m in _imports(n, p, known) if not m.startswith(n + ".")}
           for n, p in mods.items()}
  cycle = _cycle(graph)
  assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_inference_import_is_light():
  code = ("import sys, asmp_jax.inference; "
          "print(' '.join(m for m in ('tensorflow_datasets', 'grain', 'optax', 'torch') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "", f"import asmp_jax.inference loads: {out.stdout.strip()}"


def test_no_module_over_the_size_limit():
  long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
  assert {n: k for n, k in long.items() if k > MAX_MODULE_LINES} == {}


def test_models_do_not_know_the_number_of_videos():
  hits = [str(p.relative_to(REPO)) for p in (PACKAGE / "models").rglob("*.py")
          if "num_videos" in p.read_text()]
  assert hits == []


def test_results_page_is_one_page():
  assert len((REPO / "docs" / "RESULTS.md").read_text().splitlines()) <= 400


_MD_CITE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


@pytest.mark.parametrize("pattern", ["asmp_jax/**/*.py", "data/**/*.py", "configs/*.py",
                                     "bench/*.py", "launch.py", "*.md", "docs/**/*.md",
                                     "requirements.txt", "pyproject.toml"])
def test_cited_markdown_files_exist(pattern):
  missing = []
  for path in REPO.glob(pattern):
    if ".git" in path.parts or "archive" in path.parts:
      continue
    for cited in set(_MD_CITE.findall(path.read_text())):
      candidates = [REPO / cited, path.parent / cited, REPO / "docs" / cited]
      if cited.startswith("http") or any(c.exists() for c in candidates):
        continue
      missing.append(f"{path.relative_to(REPO)}: {cited}")
  assert missing == []
