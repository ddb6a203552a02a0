"""The README's two commands are the ones the Makefile and CI run."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def _recipe(target: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_readme_quick_start_is_make_serve_and_make_test():
    assert _quick_start_commands() == ["make serve", "make test"]


def test_ci_runs_the_readme_test_command_and_nothing_else():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert commands == ["make test"]


def test_make_targets_set_up_then_run():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^serve: setup$", makefile, re.M) and re.search(r"^test: setup test-packages$", makefile, re.M)
    assert _recipe("serve") == ["$(VENV)/bin/syncvid serve"]
    assert _recipe("test") == ["$(PY) -m pytest -q"]
    assert _recipe("setup") == ["bash scripts/bootstrap.sh $(VENV)"]
    assert _recipe("test-packages") == ["bash scripts/system_packages.sh"]


def test_readme_says_where_syncvid_is_and_what_ready_looks_like():
    first_screen = (REPO / "README.md").read_text().split("## Status", 1)[0]
    assert ".venv/bin/syncvid" in first_screen and "source\n.venv/bin/activate" in first_screen.replace("`", "")
    ready = "ready: serving on http://127.0.0.1:8080/"
    assert ready in first_screen
    serve = (REPO / "realtime" / "cli" / "serve.py").read_text()
    assert '"ready: serving on %s' in serve  # the line the server logs (tests/realtime/cli/test_first_run.py)
