"""Collaboration through the default DVC remote (.dvc/config): it lies outside every work tree and is
the same directory for every clone on a machine, and a fresh `git clone` + `make pull` gets the
pipeline's outputs back so that nothing reruns. Real git, dvc and make in temp dirs; HOME points at
a temp dir, so the remote (~/...) is a temp dir too and the user's real one is never written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, sh

STAGES = ["prepare", "train", "finetune", "evaluate"]
REMOTE = Path(".local/share/transferlab/dvc-remote")  # under HOME: the url in .dvc/config is ~/...
# DVC-cached outs (the rest: git)
CACHED = ["data/prepared", "models/pretrained", "models/finetuned", "plots", "reports/evaluate"]
UNCACHED = ["metrics"]  # cache: false outs, committed with dvc.lock


def default_remote(repo: Path, home: Path) -> Path:
    """The default remote's directory as DVC resolves it in `repo` for a user whose HOME is `home`."""
    name = sh("dvc", "remote", "default", cwd=repo, HOME=str(home)).stdout.strip()
    return Path(sh("dvc", "config", f"remote.{name}.url", cwd=repo, HOME=str(home)).stdout.strip())


def make(target: str, repo: Path, home: Path) -> str:
    """`make <target>` as a user runs it, minus the .venv build (the test's venv is on PATH)."""
    result = sh("make", target, "STAMP=", "TORCH=cpu", cwd=repo, HOME=str(home))
    return result.stdout + result.stderr


def digests(repo: Path, paths: list[str]) -> dict[str, str]:
    return {
        str(f.relative_to(repo)): hashlib.md5(f.read_bytes()).hexdigest()
        for p in paths
        for f in sorted((repo / p).rglob("*"))
        if f.is_file()
    }


def test_default_remote_resolves_outside_the_work_tree_and_is_shared_by_clones(tmp_path: Path):
    home = tmp_path / "home"
    first = tmp_path / "a" / "project"
    (first / ".dvc").mkdir(parents=True)
    for name in (".dvc/config", ".dvc/.gitignore", "Makefile"):
        shutil.copy2(REPO / name, first / name)
    sh("git", "init", "-q", "-b", "main", cwd=first)
    remote = default_remote(first, home)
    assert remote == home / REMOTE, "the default remote is not ~/.local/share/transferlab/dvc-remote"
    for tree in (first, REPO):
        assert not remote.is_relative_to(tree), f"the default remote lies inside {tree}"
    # The repository's own config resolves it under the real HOME, outside this work tree.
    real = default_remote(REPO, Path.home())
    assert real.is_absolute() and not real.is_relative_to(REPO), real

    (first / "data.txt").write_text("shared through the default remote\n")
    sh("dvc", "add", "data.txt", cwd=first, HOME=str(home))
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-q", "-m", "data", cwd=first)
    assert "1 file pushed" in make("push", first, home)
    assert [p.name for p in remote.rglob("*") if p.is_file()], "make push wrote nothing to the remote"

    # A clone somewhere else on the machine (another depth too) finds the same remote.
    second = tmp_path / "b" / "deeper" / "clone"
    second.parent.mkdir(parents=True)
    sh("git", "clone", "-q", str(first), str(second), cwd=tmp_path)
    assert default_remote(second, home) == remote
    assert not (second / "data.txt").exists()
    assert "1 file fetched" in make("pull", second, home)
    assert (second / "data.txt").read_text() == "shared through the default remote\n"


def committed_tiny_pipeline(first: Path) -> None:
    """Commit the tiny pipeline's results: dvc.lock and the uncached metrics in git, the rest not."""
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-q", "-m", "tiny pipeline results", cwd=first)
    tracked = sh("git", "ls-files", *CACHED, *UNCACHED, "dvc.lock", cwd=first).stdout.split()
    assert "dvc.lock" in tracked and not [p for p in tracked if p.startswith(tuple(CACHED))]
    for out in UNCACHED:  # cache: false: git carries them, dvc push does not
        assert any(p.startswith(out + "/") for p in tracked), f"{out}/ is not committed"


def clone_pulls_everything_and_reruns_nothing(first: Path, second: Path, pull, **env: str) -> None:
    """`git clone` of `first` into `second`, then `pull(second)`: every output and the run cache
    arrive, `dvc status` is clean and `dvc repro` runs no stage."""
    second.parent.mkdir(parents=True, exist_ok=True)
    sh("git", "clone", "-q", str(first), str(second), cwd=second.parent)
    assert not any((second / p).exists() for p in CACHED)
    before = json.loads(sh("dvc", "status", "--json", cwd=second, **env).stdout)
    changed = {
        path for entries in before.values() for entry in entries for paths in entry.values() for path in paths
    }
    assert sorted(before) == sorted(STAGES) and all(p.startswith(tuple(CACHED)) for p in changed), before

    assert "files fetched" in pull(second)
    assert digests(second, CACHED + UNCACHED) == digests(first, CACHED + UNCACHED)
    assert list((second / ".dvc/cache/runs").rglob("*")), "the run cache did not come along"
    assert json.loads(sh("dvc", "status", "--json", cwd=second, **env).stdout) == {}
    log = sh("dvc", "repro", cwd=second, **env).stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in log, log
    assert "Running stage" not in log and "Data and pipelines are up to date." in log, log


@pytest.mark.slow
def test_fresh_clone_pulls_the_pipeline_and_reruns_nothing(tiny_copy: Path, tmp_path: Path):
    home = tmp_path / "home"
    first = tiny_copy
    committed_tiny_pipeline(first)
    pushed = make("push", first, home)
    remote = home / REMOTE
    assert "files pushed" in pushed and remote.is_dir(), pushed
    second = tmp_path / "elsewhere" / "second"
    clone_pulls_everything_and_reruns_nothing(
        first, second, lambda repo: make("pull", repo, home), HOME=str(home)
    )


@pytest.mark.slow
def test_a_pull_from_a_remote_that_lacks_outputs_says_what_to_do(tiny_copy: Path, tmp_path: Path):
    """Before: DVC's "Checkout failed ... Is your cache up to date?" and nothing on what to do (a
    fresh machine's default remote holds none of the committed dvc.lock's outputs)."""
    committed_tiny_pipeline(tiny_copy)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(tiny_copy), str(clone), cwd=tmp_path)
    result = sh("make", "pull", "STAMP=", "TORCH=cpu", cwd=clone, HOME=str(tmp_path / "home"), check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-2:]  # make's own "Error 1" line comes last
    assert last[0].startswith("make pull: the remote lacks outputs dvc.lock names (listed above)"), last


@pytest.fixture
def sshd(tmp_path: Path):
    """A real OpenSSH server on 127.0.0.1 and a free port (Debian's openssh-server, installed with
    apt-get when missing), which lets the current user in with a key made here: (user, port, key)."""
    import getpass
    import subprocess
    import time

    from conftest import free_port

    binary = Path(shutil.which("sshd") or "/usr/sbin/sshd")
    if not binary.exists():
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "openssh-server"], capture_output=True, text=True
        )
        if installed.returncode != 0 or not binary.exists():
            pytest.skip(f"no sshd, and apt-get could not install openssh-server: {installed.stderr[-300:]}")
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host_key", "user_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name), cwd=folder)
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
    except OSError as err:
        pytest.skip(f"sshd needs /run/sshd: {err}")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    server = subprocess.Popen([str(binary), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (folder / "sshd.pid").exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.poll() is None, server.stderr.read()
        yield getpass.getuser(), port, folder / "user_key"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_a_teammate_pulls_the_pipeline_from_an_ssh_remote_and_reruns_nothing(
    tiny_copy: Path, tmp_path: Path, sshd
):
    user, port, key = sshd
    store = tmp_path / "team-store"  # the shared storage, reached only through sshd
    first = tiny_copy
    sh("dvc", "remote", "add", "-d", "team", f"ssh://{user}@127.0.0.1:{port}{store}", cwd=first)
    sh("dvc", "remote", "modify", "--local", "team", "keyfile", str(key), cwd=first)  # not committed
    committed_tiny_pipeline(first)
    pushed = sh("make", "push", "STAMP=", "TORCH=cpu", cwd=first).stdout
    assert "files pushed" in pushed and list(store.rglob("*")), pushed

    def pull(repo: Path) -> str:  # each teammate names their own key
        sh("dvc", "remote", "modify", "--local", "team", "keyfile", str(key), cwd=repo)
        return sh("make", "pull", "STAMP=", "TORCH=cpu", cwd=repo).stdout

    clone_pulls_everything_and_reruns_nothing(first, tmp_path / "teammate" / "project", pull)
