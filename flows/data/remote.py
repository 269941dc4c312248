"""A DVC remote the team shares (S3 or an S3-compatible server such as MinIO): one place the datasets live.

Without it the data a teammate adds lives only in their DVC cache; a clone has the `.dvc` files but not the data,
and ingest fails on a missing file. So `edgekd data remote URL` makes a shared remote the default (in .dvc/config,
which is committed, so every clone uses it), `edgekd data add` pushes what it adds, and a run pulls the files its
dataset's ingest stage needs when they are missing here.

Credentials never go into .dvc/config: DVC (boto) reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the
environment, or each user runs `dvc remote modify --local NAME access_key_id ...` (.dvc/config.local, git-ignored).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from flows.data.dvc import DvcError, message, run, summary

# The URL schemes DVC remotes take (dvc/config_schema.py); each but s3 needs its own dvc-* plug-in installed.
SCHEMES = ("s3", "gs", "azure", "oss", "gdrive", "ssh", "hdfs", "webhdfs", "http", "https", "webdav", "webdavs")
CHECK = "check the URL and endpoint, the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or `dvc remote " \
        "modify --local NAME access_key_id ...`) and that the bucket exists"

# Writes and deletes one small object at the remote's root: `dvc push` touches the remote only when the workspace
# has something to upload, so it cannot tell on its own whether a new, empty remote is usable.
_WRITE_PROBE = """
import sys
from dvc.repo import Repo
try:
    remote = Repo(".").cloud.get_remote(sys.argv[1])
    if remote.fs.protocol == "local":  # a local path may not exist yet; object stores have no folders to make
        remote.fs.makedirs(remote.path, exist_ok=True)
    probe = remote.fs.join(remote.path, ".edgekd-write-check")
    remote.fs.pipe_file(probe, b"edgekd checks that this remote is writable")
    remote.fs.rm_file(probe)
except Exception as e:
    sys.exit(f"ERROR: {type(e).__name__}: {e}")
"""


class RemoteError(RuntimeError):
    """The remote could not be reached or written: DVC's message and what to check."""


@dataclass(frozen=True)
class RemoteSet:
    """The project's new default remote, and what the first push said (DVC's summary)."""

    name: str
    url: str
    endpoint_url: str | None
    pushed: str


def set_remote(root: Path, url: str, name: str = "team", endpoint_url: str | None = None) -> RemoteSet:
    """Make `url` (with `endpoint_url` for an S3-compatible server) the project's default DVC remote `name`, check
    it is writable and push what the workspace tracks. ValueError for a bad URL (.dvc/config untouched); RemoteError
    when the remote is set but unusable."""
    check_url(url, endpoint_url)
    if not name.strip():
        raise ValueError(f"remote name {name!r} is empty")
    _run_checked(root, ["remote", "add", "--default", "--force", name, url])  # --force: replaces all its options
    if endpoint_url:
        _run_checked(root, ["remote", "modify", name, "endpointurl", endpoint_url])
    where = url + (f" at {endpoint_url}" if endpoint_url else "")
    # The remote stays set when it fails the check: the user may still have to add credentials for it with
    # `dvc remote modify --local NAME ...`, which needs the remote to exist.
    proc = run(root, [sys.executable, "-c", _WRITE_PROBE, name], timeout=120, module=False)
    if proc.returncode != 0:
        raise RemoteError(f"remote {name!r} ({where}) is set as the default in .dvc/config but cannot be written: "
                          f"{message(proc)}\n{CHECK}")
    proc = run(root, ["push"], timeout=3600)
    if proc.returncode != 0:
        raise RemoteError(f"remote {name!r} ({where}) is set as the default in .dvc/config but `dvc push` to it "
                          f"failed: {message(proc)}\n{CHECK}")
    return RemoteSet(name, url, endpoint_url, summary(proc))


def check_url(url: str, endpoint_url: str | None = None) -> None:
    """ValueError naming `url` (or `endpoint_url`) unless DVC can use it as a remote."""
    u = urlparse(url)
    local = u.scheme == "" or len(u.scheme) == 1  # a path; one letter is a Windows drive (C:\\...)
    if not url.strip() or url != url.strip():
        raise ValueError(f"remote URL {url!r} is empty or has spaces around it")
    if not local and u.scheme not in SCHEMES:
        raise ValueError(f"remote URL {url!r}: unsupported scheme {u.scheme!r}; use s3://BUCKET/PREFIX, a path, or "
                         f"one of {', '.join(s + '://' for s in SCHEMES)}")
    if not local and not u.netloc:
        raise ValueError(f"remote URL {url!r} names no bucket or host: expected {u.scheme}://BUCKET/PREFIX")
    if endpoint_url is not None:
        e = urlparse(endpoint_url)
        if u.scheme != "s3":
            raise ValueError(f"an endpoint URL ({endpoint_url!r}) is for s3:// remotes, not {url!r}")
        if e.scheme not in ("http", "https") or not e.netloc:
            raise ValueError(f"endpoint URL {endpoint_url!r}: expected http(s)://HOST[:PORT], e.g. "
                             "http://127.0.0.1:9000 for MinIO")


def push(root: Path, targets: list[str]) -> str:
    """`dvc push TARGETS` (the .dvc files, relative to `root`) to the default remote; returns where and DVC's
    summary ("DVC remote 'team' (s3://team/dvc): 1 file pushed"). RemoteError naming the remote when there is none or
    the push fails."""
    remote = default_remote(root)
    if remote is None:
        raise RemoteError("no default DVC remote is set (`edgekd data remote URL` sets one)")
    proc = run(root, ["push", *targets], timeout=3600)
    if proc.returncode != 0:
        raise RemoteError(f"`dvc push` to remote {remote[0]!r} ({remote[1]}) failed: {message(proc)}\n{CHECK}")
    return f"DVC remote {remote[0]!r} ({remote[1]}): {summary(proc)}"


def pull_missing(root: Path, name: str) -> list[str]:
    """Pull from the default remote the DVC-tracked files under dataset `name`'s data root that are missing here;
    returns their .dvc files (relative to `root`), [] without any DVC call when nothing is missing. Without a
    default remote they come from the local cache, if it has them. DvcError naming the files and the remote when
    the pull fails."""
    from components.config import load_config

    root = root.resolve()
    missing = [str(f.relative_to(root)) for f in tracked_files(root, load_config(root / "params.yaml", name).data.root)
               if not _outputs_present(f)]
    if not missing:
        return []
    remote = default_remote(root)
    outs = ", ".join(m.removesuffix(".dvc") for m in missing)
    source = f"DVC remote {remote[0]!r} ({remote[1]})" if remote else "the local DVC cache (no default remote is set)"
    print(f"pulling {len(missing)} DVC-tracked file(s) of dataset {name!r} from {source}: {outs}", file=sys.stderr,
          flush=True)
    proc = run(root, ["pull" if remote else "checkout", *missing], timeout=3600)
    if proc.returncode == 0:
        return missing
    if "Unable to acquire lock" in proc.stderr:  # as dvc_repro: the CLI says to try again, no traceback
        raise TimeoutError(f"dvc pull for {name}: the DVC repository is locked by another process")
    if remote:
        why = (f"pulling it from {source} failed: {message(proc)}\nIt was probably never pushed (`edgekd data add` "
               "pushes what it adds; whoever added it can run `dvc push`), or the credentials for the remote are "
               "missing (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    else:
        why = ("it is not in the local DVC cache, and no default DVC remote is set to pull it from (`edgekd data "
               f"remote URL` sets the team's): {message(proc)}")
    msg = f"missing here: {outs} (DVC-tracked, read by ingest@{name}), and {why}"
    raise DvcError(msg, data_error=msg)


def tracked_files(root: Path, data_root: str) -> list[Path]:
    """The .dvc files under `root / data_root`. All of them, not only the dataset's source: ingest@NAME depends on
    the whole data root (dvc.yaml), so any file missing there changes its input. [] for a data root outside the
    project (DVC tracks nothing there)."""
    base = (root / data_root).resolve()
    if not base.is_relative_to(root) or not base.is_dir():
        return []
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .dvc, .venv when the data root is the project
        found += [Path(folder) / f for f in files if f.endswith(".dvc")]
    return sorted(found)


def default_remote(root: Path) -> tuple[str, str] | None:
    """(name, url) of the default remote, as DVC merges its config files (a local path comes back absolute), or
    None. Read in this process: it is on the path of every `data add`, and a DVC process takes most of a second."""
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    name = config["core"].get("remote")
    return (name, config["remote"].get(name, {}).get("url", "?")) if name else None


def _outputs_present(dvc_file: Path) -> bool:
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        return all((dvc_file.parent / o["path"]).exists() for o in outs)
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return True  # not a .dvc file as DVC writes them: left to `dvc repro`, which says what is wrong with it


def _run_checked(root: Path, args: list[str]) -> None:
    proc = run(root, args, timeout=60)
    if proc.returncode != 0:
        raise RemoteError(f"`dvc {' '.join(args)}` failed: {message(proc)}")
