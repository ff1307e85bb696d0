"""Model weights kept once, in DVC's cache and remote: a registered model records where DVC keeps
its folder (the `.dir` md5 DVC gives the output, the repository, the remote) instead of carrying
a copy, and gets the folder back through DVC's own API when it loads: the workspace copy when it
has that hash, else a checkout from DVC's cache, fetched from the DVC remote first when missing.
The weights are found by their content hash or not at all, never by their path alone."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from transferlab.errors import UserError

log = logging.getLogger(__name__)


def reference(folder: Path) -> dict:
    """The record of `folder` (a DVC output of the current repository): its hash as DVC computes
    it (from DVC's state, so not read again when DVC has just hashed it). When DVC's cache lacks
    the folder (a stage run by hand, a sweep) it goes in, as `dvc commit` would put it, without
    touching dvc.lock."""
    from dvc.repo import Repo
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.transfer import transfer

    from transferlab.pipeline import project_root

    try:
        repo = Repo(os.fspath(folder.resolve()))
    except Exception as err:  # NotDvcRepoError: not inside a DVC repository
        raise UserError(
            f"{folder} is not inside a DVC repository ({err}): the registered model "
            "refers to its weights in DVC's cache (tracking.registered_model=null "
            "skips registering)"
        ) from None
    with repo:
        cache = repo.cache.local
        staging, _, obj = build(cache, os.fspath(folder.resolve()), repo.fs, "md5", ignore=repo.dvcignore)
        transfer(staging, cache, {obj.hash_info}, shallow=False)  # a no-op when already cached
        remote = repo.config["core"].get("remote")
        url = repo.config["remote"].get(remote, {}).get("url") if remote else None
        root = repo.root_dir
    with contextlib.suppress(Exception):  # a `dvc exp run --temp` copy is deleted afterwards
        root = Repo.find_root(os.fspath(project_root()))  # and uses the project's cache
    log.info("%s is %s in DVC's cache; the model refers to it there", folder, obj.hash_info.value)
    return {
        "md5": obj.hash_info.value,
        "path": folder.as_posix(),
        "root": root,
        "remote": f"{remote} ({url})" if remote else None,
    }


@contextlib.contextmanager
def materialized(ref: dict) -> Iterator[Path]:
    """The folder `ref` records, for the time of the `with` block: the workspace copy when it has
    the recorded hash, else a checkout (symlinks) from DVC's cache, fetched from the repository's
    DVC remote first when the cache lacks it. Raises UserError naming the hash when neither has it."""
    import tempfile

    from dvc.repo import Repo
    from dvc_data.hashfile.checkout import checkout

    md5 = ref["md5"]
    root = ref["root"] if Path(ref["root"], ".dvc").is_dir() else os.curdir  # else: serving from a clone
    try:
        repo = Repo(root, config={"cache": {"type": "symlink"}})  # link, never copy, into the cache
    except Exception as err:  # NotDvcRepoError
        raise missing(
            ref, f"there is no DVC repository at {ref['root']} or around {Path.cwd()} ({err})"
        ) from None
    with repo:
        workspace = Path(repo.root_dir, ref["path"])
        if workspace.is_dir() and _hash(repo, workspace) == md5:
            yield workspace
            return
        tree = _cached_tree(repo, ref)
        with tempfile.TemporaryDirectory(prefix="transferlab-weights-") as tmp:
            folder = Path(tmp, "model")
            checkout(os.fspath(folder), repo.fs, tree, repo.cache.local)
            log.info("loading %s (%s) from DVC's cache in %s", ref["path"], md5, repo.root_dir)
            yield folder


def _hash(repo, folder: Path) -> str:
    from dvc_data.hashfile.build import build

    _, _, obj = build(
        repo.cache.local, os.fspath(folder), repo.fs, "md5", dry_run=True, ignore=repo.dvcignore
    )
    return obj.hash_info.value


def _cached_tree(repo, ref: dict):
    """The folder's tree from DVC's cache, every file in it checked against its hash; what the
    cache lacks is fetched from the default remote: first the `.dir` listing, then its files (as
    `dvc fetch` does)."""
    from dvc_data.hashfile import check, load
    from dvc_data.hashfile.hash_info import HashInfo

    cache, wanted = repo.cache.local, HashInfo("md5", ref["md5"])
    with contextlib.suppress(Exception):  # not (all) in the cache: fetch below
        tree = load(cache, wanted)
        check(cache, tree)
        return tree
    remote = repo.config["core"].get("remote")
    if not remote:
        raise missing(ref, f"it is not in DVC's cache of {repo.root_dir}, which has no default remote")
    try:
        repo.cloud.pull([wanted])
        tree = load(cache, wanted)
        repo.cloud.pull({wanted, *(oid for _, _, oid in tree)})
        check(cache, tree)
    except Exception as err:  # missing on the remote (FileNotFoundError), unreachable, corrupt
        detail = "" if isinstance(err, FileNotFoundError) else f" ({type(err).__name__}: {err})"
        raise missing(
            ref, f"it is neither in DVC's cache of {repo.root_dir} nor on its remote {remote!r}{detail}"
        ) from None
    log.info("fetched %s (%s) from the DVC remote %r", ref["path"], ref["md5"], remote)
    return tree


def missing(ref: dict, why: str) -> UserError:
    md5, root = ref["md5"], ref["root"]
    return UserError(
        f"the model's weights are unavailable: it needs {ref['path']} with DVC hash {md5} (logged in "
        f"{root}, DVC remote {ref.get('remote') or 'none'}), and {why}. Get them with `dvc pull` at "
        f"a commit whose dvc.lock lists that hash (`git log -S {md5} -- dvc.lock`), in {root} or, "
        "where that does not exist, in the clone of the project you load the model from"
    )
