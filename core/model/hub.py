"""Pretrained weights from the internet: cache lookup, download, clear offline errors.

Two sources: a plain URL kept in the torch hub cache (`$TORCH_HOME/hub/checkpoints`,
used by torchvision and by older timm weights) and a Hugging Face repository kept
in the HF hub cache (`$HF_HUB_CACHE`, used by timm). A source is a small
JSON-able dict, so `tlzoo list backbones` can say "cached" without importing torch:
`{"url": ...}` or `{"hf": "timm/resnet50.a1_in1k", "files": ["model.safetensors", ...]}`.
Every file found here is read by tlzoo.model.weights.load_state_file, never by pickle.
The cache layouts and the download are the libraries' own
(`huggingface_hub.try_to_load_from_cache`, `torch.hub.download_url_to_file`);
what tlzoo adds is the offline check that fails fast and the error naming the ways out.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from tlzoo.errors import WeightsError

HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order: safe file first
PROBE_TIMEOUT_S = 3.0  # a host that does not answer this fast counts as offline
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch hub convention: resnet18-f37072fd.pth
_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """TLZOO_OFFLINE or HF_HUB_OFFLINE: never touch the network."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("TLZOO_OFFLINE", "HF_HUB_OFFLINE"))


def torch_hub_dir() -> Path:
    """torch.hub.get_dir(), computed without importing torch when it is not loaded yet."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def hf_cache_dir() -> Path:
    """The HF hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expanduser(os.environ[var]))
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("HF_HOME", os.path.join(cache, "huggingface")))) / "hub"


def url_cache_path(url: str) -> Path:
    return torch_hub_dir() / "checkpoints" / os.path.basename(urlparse(url).path)


def split_revision(repo: str) -> tuple[str, str]:
    """'timm/x@abc' -> ('timm/x', 'abc'); no revision means 'main'."""
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or "main"


def hf_repo_dir(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def hf_cached_file(repo: str, filename: str) -> Path | None:
    """The cached file of `repo` at its revision (a branch, tag or commit), as huggingface_hub finds it."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, revision = split_revision(repo)
    if not hf_repo_dir(repo_id).is_dir():  # the common case, without asking the library
        return None
    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None  # or the "known not to exist" marker


def cached_file(source: dict) -> Path | None:
    """Where `source` already lies on this machine, or None."""
    if "url" in source:
        path = url_cache_path(source["url"])
        return path if path.is_file() else None
    for filename in source.get("files", HF_FILES):
        found = hf_cached_file(source["hf"], filename)
        if found is not None:
            return found
    return None


def expected_location(source: dict) -> str:
    """Where a user can put the file by hand, in words."""
    if "url" in source:
        return f"{url_cache_path(source['url'])} (the file at {source['url']})"
    repo_id, revision = split_revision(source["hf"])
    repo_dir = hf_repo_dir(repo_id)
    filename = source.get("files", HF_FILES)[0]
    return (f"{repo_dir}/snapshots/<commit>/{filename} with the commit hash written in "
            f"{repo_dir}/refs/{revision} (e.g. 'huggingface-cli download {repo_id} {filename} "
            f"--cache-dir {hf_cache_dir()}' on a machine with internet)")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to the host of `url`? Fails fast instead of retrying for minutes."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def not_available(what: str, source: dict, reason: str) -> WeightsError:
    return WeightsError(
        f"pretrained weights for {what} are not available offline: {reason}",
        f"put the file at {expected_location(source)}; or give a local file with "
        "backbone.weights: {\"path\": \"/path/to/weights.safetensors\"}; "
        "or train from scratch with backbone.weights: \"none\"",
    )


def check_obtainable(sources: list[dict], what: str) -> None:
    """Raise what fetch_url/fetch_hf would raise before downloading: no source cached, and offline or the
    first source's host unreachable. Downloads nothing (for `tlzoo validate`)."""
    if not sources or any(cached_file(source) for source in sources):
        return
    first = sources[0]
    where = "HF cache" if "hf" in first else "cache"
    if offline():
        raise not_available(what, first, f"not in the {where} and TLZOO_OFFLINE/HF_HUB_OFFLINE is set")
    url = first["url"] if "url" in first else os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not reachable(url):
        raise not_available(what, first, f"not in the {where} and {urlparse(url).hostname} cannot be reached")


def download(url: str, dst: Path, hash_prefix: str | None = None) -> None:
    """Fetch `url` into `dst` through torch.hub (a temporary file renamed into place; sha256 prefix checked)."""
    from torch.hub import download_url_to_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(dst), hash_prefix, progress=False)
    except RuntimeError as exc:  # torch.hub's hash mismatch; the partial file is already gone
        raise WeightsError(f"download of {url} is corrupt: {exc}",
                           "try again; if it keeps failing, download the file by hand") from None


def fetch_url(url: str, what: str) -> Path:
    """The torch-hub-cached file for `url`, downloading it when online."""
    source = {"url": url}
    found = cached_file(source)
    if found is not None:
        return found
    if offline():
        raise not_available(what, source, "not in the cache and TLZOO_OFFLINE/HF_HUB_OFFLINE is set")
    if not reachable(url):
        raise not_available(what, source, f"not in the cache and {urlparse(url).hostname} cannot be reached")
    dst = url_cache_path(url)
    match = HASH_IN_NAME.search(dst.name)
    print(f"tlzoo: downloading {url} to {dst}", file=sys.stderr)
    try:
        download(url, dst, match.group(1) if match else None)
    except OSError as exc:  # URLError, timeouts and refused connections are all OSErrors
        raise not_available(what, source, f"download failed: {exc}") from None
    return dst


def fetch_hf(repo: str, what: str, files: tuple[str, ...] = HF_FILES) -> Path:
    """The HF-cached weights file of `repo` (first of `files` that exists), downloading when online."""
    source = {"hf": repo, "files": list(files)}
    found = cached_file(source)
    if found is not None:
        return found
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if offline():
        raise not_available(what, source, "not in the HF cache and HF_HUB_OFFLINE/TLZOO_OFFLINE is set")
    if not reachable(endpoint):
        raise not_available(what, source, f"not in the HF cache and {endpoint} cannot be reached")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, revision = split_revision(repo)
    for filename in files:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=hf_cache_dir(),
                                        etag_timeout=PROBE_TIMEOUT_S * 3))
        except LocalEntryNotFoundError as exc:  # the network went away mid-way
            raise not_available(what, source, str(exc).splitlines()[0]) from None
        except EntryNotFoundError:
            continue  # the repository has the other file format
        except Exception as exc:  # HTTP errors, gated repositories, bad revisions
            raise not_available(what, source, f"download failed: {type(exc).__name__}: {exc}") from None
    raise WeightsError(f"the Hugging Face repository {repo_id} has none of {', '.join(files)}",
                       "pick another weights tag; 'tlzoo list backbones --pretrained' shows them")

