"""The developer tooling around the pipeline: the pre-commit hooks run offline on a copy of the
project, `make clean` / `make distclean` remove exactly the generated stores, and Hydra's bash
completion completes the app as docs/sweeps.md says."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO, VENV_BIN, copy_project, sh

HOOKS = (
    "ruff check",
    "ruff format",
    "trim trailing whitespace",
    "fix end of files",
    "check yaml",
    "check for added large files",
)


def test_pre_commit_hooks_pass_on_the_project_and_catch_a_mistake(tmp_path: Path):
    repo = copy_project(tmp_path / "project")
    (repo / ".venv").symlink_to(VENV_BIN.parent)  # the hooks run .venv's tools, as in a checkout
    home = str(tmp_path / "pre-commit-home")  # nothing cloned or installed there: local hooks only
    result = sh("pre-commit", "run", "--all-files", cwd=repo, check=False, PRE_COMMIT_HOME=home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for hook in HOOKS:
        assert any(line.startswith(hook) and line.endswith("Passed") for line in output.splitlines()), output

    module, config = repo / "src/transferlab/errors.py", repo / "conf/config.yaml"
    module.write_text(module.read_text() + "\n\nimport os   \nx = [1,2]\n\n\n")  # unused, unformatted
    config.write_text(config.read_text() + "# a comment   \n\n\n")  # trailing spaces, blank end
    planted = [str(path.relative_to(repo)) for path in (module, config)]
    result = sh("pre-commit", "run", "--files", *planted, cwd=repo, check=False, PRE_COMMIT_HOME=home)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "F401" in output and "1 file reformatted" in output, output
    assert module.read_text().endswith("import os\n\nx = [1, 2]\n"), "ruff format lays it out"
    assert "Fixing conf/config.yaml" in output, output
    assert config.read_text().endswith("# a comment\n"), "the fixers trim the spaces and the blank end"


SCRATCH = (
    ".venv/bin/python",
    ".cache/stages/prepare/0123/data/prepared/train.parquet",
    ".checkpoints/train/checkpoint-4/model.safetensors",
    "outputs/2026-12-01/00-00-00/.hydra/c.yaml",
    "multirun/2026-12-01/00-00-00/0/job.log",
    "dvc_plots/index.html",
    ".pytest_cache/v/x",
    ".ruff_cache/x",
    "src/transferlab/__pycache__/cli.cpython-311.pyc",
    "tests/__pycache__/x.pyc",
)
RECORDS = ("mlflow.db", "mlflow.db-wal", "mlruns/1/abc/artifacts/model.safetensors", "optuna.db")
KEPT = (
    "data/prepared/train.parquet",
    "models/finetuned/model.safetensors",
    "metrics/data.json",
    "plots/confusion.csv",
    "reports/evaluate/misclassified.csv",
    "dvc.lock",
    "params.yaml",
    ".dvc/cache/files/md5/ab/cdef",
    ".dvc/tmp/exps/x",
    ".git/HEAD",
    "conf/config.yaml",
    "my_data.csv",
)


def test_make_clean_removes_the_generated_stores_and_distclean_the_records(tmp_path: Path):
    shutil.copy(REPO / "Makefile", tmp_path)
    for rel in SCRATCH + RECORDS + KEPT:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")

    def present() -> set[str]:
        return {rel for rel in SCRATCH + RECORDS + KEPT if (tmp_path / rel).exists()}

    sh("make", "clean", cwd=tmp_path)
    assert present() == set(RECORDS + KEPT)
    assert not (tmp_path / ".venv").exists() and (tmp_path / ".cache").is_dir()  # only the stage cache
    sh("make", "distclean", cwd=tmp_path)
    assert present() == set(KEPT), "distclean removes the MLflow store and the Optuna studies, nothing else"


def completions(line: str) -> list[str]:
    """What bash offers for `line<TAB>` after eval-ing Hydra's completion script, in the project root."""
    script = f"""
eval "$(python -m transferlab --shell-completion install=bash)"
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; read -ra COMP_WORDS <<< "$COMP_LINE"
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=()
hydra_bash_completion
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    return sh("bash", "-c", script, cwd=REPO).stdout.split()


def test_hydra_bash_completion_completes_the_app_as_a_file_not_as_python_dash_m():
    app = "python src/transferlab/__main__.py"
    assert completions(f"{app} finetune.back") == ["finetune.backbone_lr="]
    assert completions(f"{app} hparams_search=") == ["hparams_search=finetune_optuna"]
    assert completions("python -m transferlab finetune.back") == []  # docs/sweeps.md says so
