"""tlzoo.model.hub against local files: an HF hub cache and a torch hub cache made in the test, and a local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest
import torch
from safetensors.torch import save_file

from tlzoo.errors import WeightsError
from tlzoo.model import hub

from conftest import resolved_backbone

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TLZOO_OFFLINE", "1")
    return tmp_path


def hf_snapshot(caches, repo_id: str, filename: str, data: bytes, ref: str = "main", commit: str = COMMIT):
    repo = caches / "hf" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    path = repo / "snapshots" / commit / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_hf_cache_follows_branches_tags_and_commits(caches):
    main = hf_snapshot(caches, "org/net", "model.safetensors", b"main")
    tagged = hf_snapshot(caches, "org/net", "model.safetensors", b"tag", ref="v1", commit="f" * 40)
    assert hub.cached_file({"hf": "org/net"}) == main
    assert hub.cached_file({"hf": "org/net@v1"}) == tagged
    assert hub.cached_file({"hf": f"org/net@{'f' * 40}"}) == tagged
    assert hub.cached_file({"hf": "org/net@v2"}) is None
    assert hub.cached_file({"hf": "org/other"}) is None


def test_hf_file_known_missing_falls_through_to_the_next_format(caches):
    bin_file = hf_snapshot(caches, "org/net", "pytorch_model.bin", b"bin")
    marker = caches / "hf" / "models--org--net" / ".no_exist" / COMMIT / "model.safetensors"
    marker.parent.mkdir(parents=True)
    marker.touch()  # huggingface_hub's record that the repository has no such file
    assert hub.cached_file({"hf": "org/net"}) == bin_file


def test_offline_miss_names_where_to_put_the_file(caches):
    with pytest.raises(WeightsError) as caught:
        hub.fetch_hf("org/net", "timm/net")
    text = str(caught.value)
    assert "models--org--net" in text and "refs/main" in text and "weights: \"none\"" in text
    with pytest.raises(WeightsError, match=r"checkpoints/w-1234abcd\.pth"):
        hub.fetch_url("https://example.org/w-1234abcd.pth", "torchvision/net")


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/served, and network access allowed for the test."""
    for var in ("TLZOO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_lands_in_the_torch_hub_cache_with_its_hash_checked(caches, server, capsys):
    served, base = server
    data = b"weights" * 1000
    name = f"net-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (served / name).write_bytes(data)
    path = hub.fetch_url(f"{base}/{name}", "torchvision/net")
    assert path == caches / "torch" / "hub" / "checkpoints" / name and path.read_bytes() == data
    assert f"downloading {base}/{name}" in capsys.readouterr().err
    assert hub.fetch_url(f"{base}/{name}", "torchvision/net") == path  # now from the cache


def test_corrupt_download_is_refused_and_leaves_nothing(caches, server):
    served, base = server
    (served / "net-deadbeef.pth").write_bytes(b"not what the name promises")
    with pytest.raises(WeightsError, match="corrupt"):
        hub.fetch_url(f"{base}/net-deadbeef.pth", "torchvision/net")
    folder = caches / "torch" / "hub" / "checkpoints"
    assert not any(folder.iterdir()), "a partial or corrupt file was left in the cache"


def test_timm_backbone_loads_its_weights_from_the_hf_cache(caches):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False)
    state = {key: value.contiguous() for key, value in reference.state_dict().items()}
    path = caches / "model.safetensors"
    save_file(state, str(path))
    hf_snapshot(caches, "timm/resnet18.a1_in1k", "model.safetensors", path.read_bytes())
    backbone = resolved_backbone("timm/resnet18.a1_in1k").build()
    assert torch.equal(backbone.model.state_dict()["conv1.weight"], state["conv1.weight"])
    assert torch.equal(backbone.model.state_dict()["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
