"""Plain helpers for the tests: synthetic clips written with PyAV, the tiny open_clip model, and
running the CLI (in this process with click's runner, or as a real subprocess)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = ROOT / "tests" / "assets" / "tiny-clip.json"


# ------------------------------------------------------------------------------------- videos
def write_h264(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, crf: int = 18) -> Path:
    """Write uint8 RGB ``frames [T, H, W, 3]`` as an H.264 (libx264, yuv420p) mp4; H, W even."""
    return write_video(path, frames, "libx264", fps, {"crf": str(crf), "preset": "ultrafast"})


def write_video(path: str | os.PathLike, frames: np.ndarray, codec: str, fps: int, options: dict | None = None,
                container: str | None = None) -> Path:
    """Encode uint8 RGB ``frames [T, H, W, 3]`` with ``codec`` (yuv420p) into ``path`` (the container
    from its extension, or ``container``)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if options:
            stream.options = options
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def synth_frames(seed: int, frames: int = 24, height: int = 96, width: int = 128) -> np.ndarray:
    """Smooth moving colour waves, distinct per seed: ``[T, H, W, 3]`` uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.03, 0.15, (2, 3)).astype(np.float32)  # per channel, x and y
    phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
    speed = rng.uniform(0.1, 0.5, 3).astype(np.float32)
    t = np.arange(frames, dtype=np.float32)[:, None, None, None]  # [T, 1, 1, 1]
    wave = np.sin(freq[0] * xx[..., None] + freq[1] * yy[..., None] + phase + speed * t)  # [T, H, W, 3]
    return np.clip(127.5 + 120.0 * wave, 0, 255).astype(np.uint8)


def decode_all_pyav(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video, decoded with PyAV alone: ``[n, H, W, 3]`` uint8 RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def decode_pyav_at(path: str | os.PathLike, indices) -> np.ndarray:
    """Frames at ``indices`` (any shape) decoded with PyAV alone, sequentially from the start:
    ``[*indices.shape, H, W, 3]`` uint8 RGB. Independent of cachekit's decoders."""
    import av

    idx = np.asarray(indices, dtype=np.int64)
    wanted = set(idx.ravel().tolist())
    got = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if len(got) == len(wanted):
                break
    missing = wanted - set(got)
    if missing:
        raise ValueError(f"{path}: frames {sorted(missing)[:5]} not decodable")
    return np.stack([got[i] for i in idx.ravel().tolist()]).reshape(*idx.shape, *got[idx.flat[0]].shape)


# ------------------------------------------------------------------------------------- model
def build_tiny_model(cfg_path: str | os.PathLike = TINY_CFG, seed: int = 0):
    """The tiny open_clip model, randomly initialised with ``seed``, registered under its file stem."""
    import open_clip
    import torch

    open_clip.add_model_config(str(cfg_path))
    torch.manual_seed(seed)
    return open_clip.create_model(Path(cfg_path).stem, pretrained=None).eval()


# ------------------------------------------------------------------------------------- stores
def entry_arrays(i: int, rows: int = 4, blob: int = 0) -> dict[str, np.ndarray]:
    """Deterministic arrays of store entry ``i`` (several dtypes and ranks, a 0-d one too).

    ``blob`` > 0 adds a float32 array of that many values, to make a commit take a while.
    """
    rng = np.random.default_rng(i)
    out = {
        "emb": rng.standard_normal((2, rows, 8)).astype(np.float32),  # [V, T, D]
        "tokens": rng.standard_normal((2, rows, 5, 8)).astype(np.float16),  # [V, T, N+1, W]
        "frame_idx": (np.arange(2 * rows, dtype=np.int32).reshape(2, rows) + i),  # [V, T]
        "n": np.array(i, dtype=np.int64),
    }
    if blob:
        out["blob"] = rng.standard_normal(blob).astype(np.float32)
    return out


def tree_digest(root: str | os.PathLike, ignore_suffix: str = ".lock") -> dict[str, str]:
    """relative path -> sha256 of bytes, for every file under ``root`` (or ``root`` itself).

    Files ending ``ignore_suffix`` are left out: the writer-lock files (``x.zarr/.lock``,
    ``x.h5.lock``) record who last opened the store for writing, not its content.
    """
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for p in files:
        rel = p.name if p == root else str(p.relative_to(root))
        if ignore_suffix and p.name.endswith(ignore_suffix):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def record_hashes(store_path: str | os.PathLike, group: str = "videos") -> dict[str, dict[str, str]]:
    """key -> {array name -> sha256} from the commit records of a store."""
    from clipcache.stores import open_store

    with open_store(store_path, "r") as s:
        return {k: {n: m["sha256"] for n, m in r["arrays"].items()} for k, r in s.records(group).items()}


# ------------------------------------------------------------------------------------- CLI
def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def cli_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "clipcache.cli.main", *map(str, args)]


def run_cli(args: Sequence[str], cwd: str | os.PathLike | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m clipcache.cli.main ARGS`` in a subprocess; returns (exit code, stdout, stderr)."""
    proc = subprocess.run(cli_command(args), cwd=cwd or ROOT, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def invoke(args: Sequence[str]) -> tuple[int, str, str]:
    """Run the CLI in this process (click's runner): (exit code, stdout, stderr).

    An exception other than the command's own ``SystemExit`` is re-raised, so a traceback the
    user would see fails the test loudly.
    """
    from click.testing import CliRunner

    from clipcache.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="clipcache")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------------------------- synthetic splits
def synth_split_lists(data_dir: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """The split files a :mod:`cachekit.synth` data set wrote, as relative clip paths: layout ->
    list name -> paths (``b2n``: train / base_val / novel_val; ``clip_fsar`` and ``vifi``:
    train / val / test)."""
    root = Path(data_dir) / "splits"
    out: dict[str, dict[str, list[str]]] = {}
    if (root / "b2n").is_dir():
        out["b2n"] = {s: [ln.rsplit(" ", 1)[0] for ln in (root / "b2n" / f"{s}.txt").read_text().splitlines()]
                      for s in ("train", "base_val", "novel_val")}
    out["clip_fsar"] = {s: [ln.split("//", 1)[1] for ln in (root / "clip_fsar" / f"{s}_few_shot.txt")
                            .read_text().splitlines()] for s in ("train", "val", "test")}
    out["vifi"] = {s: [ln.rsplit(" ", 1)[0] for ln in (root / "vifi" / f"{s}.txt").read_text().splitlines()]
                   for s in ("train", "val", "test")}
    return out


def held_out_twins(data_dir: str | os.PathLike, threshold: float = 3.0) -> list[tuple[str, str, str, str, float]]:
    """Held-out clips of a synthetic data set's split files that equal a training clip of the same
    layout, forwards or played backwards: ``(layout/list, held-out clip, training clip, "forwards" |
    "backwards", mean absolute pixel difference)``, compared on the decoded frames (0-255 scale;
    unrelated clips of the benchmark differ by about 9, a clip and its time reversal by under 1).

    Cheap first: each frame average-pooled to 8 x 8 (a pooled difference never exceeds the full
    one), then the full frames of the candidate pairs."""
    root = Path(data_dir)
    signatures: dict[str, np.ndarray] = {}

    def frames(rel: str) -> np.ndarray:
        return decode_all_pyav(root / rel).astype(np.int16)  # [T, H, W, 3]

    def pooled(rel: str) -> np.ndarray:
        if rel not in signatures:
            f = frames(rel).astype(np.float32)
            t, h, w, c = f.shape
            signatures[rel] = f[:, : h // 8 * 8, : w // 8 * 8].reshape(t, 8, h // 8, 8, w // 8, c).mean(axis=(2, 4))
        return signatures[rel]  # [T, 8, 8, 3]

    found = []
    for layout, lists in synth_split_lists(root).items():
        train = sorted(set(lists["train"]))
        if not train:
            continue
        small = np.stack([pooled(r) for r in train])  # [N, T, 8, 8, 3]
        for name, held in lists.items():
            if name == "train":
                continue
            for rel in held:
                p = pooled(rel)
                for direction, sig in (("forwards", p), ("backwards", p[::-1])):
                    if sig.shape != small.shape[1:]:
                        continue
                    d = np.abs(small - sig[None]).mean(axis=(1, 2, 3, 4))  # [N]
                    for j in np.flatnonzero(d < threshold):
                        full = frames(rel) if direction == "forwards" else frames(rel)[::-1]
                        diff = float(np.abs(frames(train[j]) - full).mean())
                        if diff < threshold:
                            found.append((f"{layout}/{name}", rel, train[j], direction, diff))
    return found


# ------------------------------------------------------------------------------------- S3
@contextlib.contextmanager
def local_s3(config_dir: str | os.PathLike):
    """moto's S3 server on 127.0.0.1 (a free port), for as long as the block runs: the standard
    ``AWS_*`` variables point at it (this process and the ones it starts), no user AWS
    configuration is read; yields the endpoint URL. Needs ``moto[server]`` and ``s3fs``."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    cfg = Path(config_dir)
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(cfg / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(cfg / "credentials")}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield env["AWS_ENDPOINT_URL"]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def benchmark_script(name: str):
    """A module of benchmarks/ (scripts that import each other from their own folder)."""
    import importlib
    import sys

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, bench)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(bench)
