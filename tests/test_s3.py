"""Stores on a real S3 endpoint: moto's S3 server on 127.0.0.1, reached through s3fs over HTTP,
the endpoint given the standard way (``AWS_ENDPOINT_URL``), as a user types it. Extraction to
``s3://``, a kill -9 and the resume, three shards at once, verify and gc, and train / eval / index
reading from ``s3://``. Leases and commit records are created with ``If-None-Match: *``, which
this server honours (checked here). Nothing but 127.0.0.1 is contacted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'clipcache[test]')")
s3fs = pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'clipcache[test]')")

from cachekit.synth import SynthConfig, synth_dataset  # noqa: E402
from helpers import TINY_CFG, cli_command, cli_env, invoke, local_s3, record_hashes, run_cli  # noqa: E402
from clipcache.stores import StoreLocked, open_store  # noqa: E402

COMMON = ["--model", str(TINY_CFG), "--pretrained", "random", "--frames", "4", "--tokens-at", "1",
          "--no-progress"]
SPLITS = ["splits/clip_fsar/train_few_shot.txt", "splits/clip_fsar/val_few_shot.txt",
          "splits/clip_fsar/test_few_shot.txt", "--class-names", "splits/clip_fsar", "--video-root", "."]


def splits_in(clips: Path) -> list[str]:
    """SPLITS with absolute paths (for a run in this process, from any folder)."""
    return [str(clips / a) if a.startswith("splits/") or a == "." else a for a in SPLITS]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """moto's S3 server on 127.0.0.1; the AWS_* variables point at it (tests/helpers.py)."""
    with local_s3(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture
def bucket(endpoint) -> str:
    name = f"cc-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem().mkdir(name)
    return name


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s3clips")
    synth_dataset(out, SynthConfig(classes=("something falling", "something rising", "something appearing",
                                            "something disappearing"),
                                   videos_per_class=3, frames=12, size=64, seed=9))
    return out


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory):
    """One process's extraction to local disk (in this process: the CLI's own code path)."""
    store = tmp_path_factory.mktemp("s3ref") / "ref.zarr"
    rc, out, err = invoke(["extract", *splits_in(clips), "--store", str(store), *COMMON])
    assert rc == 0, err
    return store, record_hashes(store), record_hashes(store, "text")


def _records(url: str) -> list[str]:
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return [p for p in fs.find(url.removeprefix("s3://") + "/meta/log/videos") if p.endswith(".json")]


def test_the_endpoint_honours_conditional_writes_and_leases_use_them(bucket):
    """If-None-Match: * is honoured (a second exclusive create fails): a writer id held by a live
    process is refused to another process; a different id writes along."""
    from clipcache.stores.base import Files

    files = Files(f"{bucket}/probe", s3fs.S3FileSystem())
    assert files.create("x", b"1") and not files.create("x", b"2") and files.get("x") == b"1"
    url = f"s3://{bucket}/lease.zarr"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from clipcache.stores import open_store; "
        "s = open_store(sys.argv[1], 'a', attrs={'cache_key': {}}, writer='w1'); print('held', flush=True); "
        "sys.stdin.readline(); s.close()"), url], env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        with pytest.raises(StoreLocked, match="writer w1 of .* is already running"):
            open_store(url, "a", writer="w1")
        with open_store(url, "a", writer="w2") as s:
            s.commit("videos", "k", {"emb": __import__("numpy").ones((1, 2), "float32")}, {})
    finally:
        holder.communicate("\n", timeout=60)
    with open_store(url, "a", writer="w1") as s:  # released: the id is free again
        assert s.keys("videos") == ["k"]


@pytest.mark.slow
def test_extract_to_s3_as_typed_equals_local_and_resumes(clips, reference, bucket):
    url = f"s3://{bucket}/cache.zarr"
    rc, out, err = run_cli(["extract", *SPLITS, "--store", url, *COMMON], cwd=clips)
    assert rc == 0, err
    assert "12 extracted" in out
    _, videos, text = reference
    assert (record_hashes(url), record_hashes(url, "text")) == (videos, text)
    rc, out, err = invoke(["extract", *splits_in(clips), "--store", url, *COMMON])  # resumes: all cached
    assert rc == 0 and "0 extracted, 12 already cached" in out, err
    rc, out, err = invoke(["info", url, "--json"])
    assert rc == 0 and json.loads(out)["videos"] == 12


@pytest.mark.slow
def test_kill_9_on_s3_then_the_same_writer_resumes(clips, reference, bucket):
    """SIGKILL mid-extraction: what is visible verifies; the rerun with the same writer id takes
    the dead writer's lease over (its holder is gone) and finishes with the reference content;
    gc then removes nothing a reader needs."""
    url = f"s3://{bucket}/cache.zarr"
    cmd = ["extract", *SPLITS, "--store", url, *COMMON, "--commit-every", "1", "--writer", "w1"]
    proc = subprocess.Popen(cli_command(cmd), cwd=clips, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and len(_records(url)) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "the extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with open_store(url) as s:
        done = len(s.keys("videos"))
        assert 2 <= done < 12 and s.verify("videos") == (done, [])
    rc, out, err = run_cli(cmd, cwd=clips)
    assert rc == 0, err
    assert f"{done} already cached" in out
    _, videos, text = reference
    assert (record_hashes(url), record_hashes(url, "text")) == (videos, text)
    rc, out, err = invoke(["verify", url, "--gc"])
    assert rc == 0 and "bad=0" in out, err
    assert record_hashes(url) == videos


@pytest.mark.slow
def test_three_shards_at_once_on_s3_then_train_eval_index_from_s3(clips, reference, bucket, tmp_path):
    url = f"s3://{bucket}/cache.zarr"
    procs = [subprocess.Popen(cli_command(["extract", *SPLITS, "--store", url, *COMMON, "--shard", f"{i}/3"]),
                              cwd=clips, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    ref_store, videos, text = reference
    assert (record_hashes(url), record_hashes(url, "text")) == (videos, text)
    rc, out, err = invoke(["verify", url])
    assert rc == 0 and out.startswith("checked=16 ok=16 bad=0"), (out, err)

    # train, eval and index read the store from s3:// (eval: the same result as from the local store)
    run = tmp_path / "run"
    rc, out, err = invoke(["train", "--method", "ma_fsar", "--store", url, "--out", str(run), "--ways", "2",
                           "--queries", "1", "--episodes", "4", "--val-episodes", "0", "--opt", "ffn_dim=32",
                           "--threads", "1", "--json"])
    assert rc == 0, err
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    results = []
    for store in (url, str(ref_store)):
        rc, out, err = invoke(["eval", "--store", store, "--protocol", "episodic", "--method", "proto", "--ways", "2",
                               "--episodes", "20", "--split", "train", "--json"])
        assert rc == 0, err
        results.append(json.loads(out.splitlines()[0]))
    assert results[0]["accuracy"] == results[1]["accuracy"] and results[0]["episodes"] == 20
    rc, out, err = invoke(["eval", "--store", url, "--run", str(run), "--episodes", "10", "--ways", "2",
                           "--split", "train", "--allow-overlap", "--json"])
    assert rc == 0, err
    rc, out, err = invoke(["index", "--store", url, "--out", str(tmp_path / "index"), "--no-onnx"])
    assert rc == 0, err
    assert (tmp_path / "index").is_dir()


def test_storage_option_gives_the_endpoint_over_the_variable(bucket, endpoint, monkeypatch):
    """``--storage-option KEY=VALUE`` reaches fsspec: here the endpoint, while AWS_ENDPOINT_URL
    points at a closed port on 127.0.0.1 (so an ignored option fails, and only locally)."""
    import numpy as np

    from clipcache.stores import STORAGE_OPTIONS_ENV

    url = f"s3://{bucket}/opt.zarr"
    with open_store(url, "a", attrs={"cache_key": {"frames": 4}, "model_info": {}}) as s:
        s.commit("videos", "k", {"emb": np.ones((1, 2), np.float32)}, {"label": "x"})
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, "{}")  # restored (removed) after the test
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3fs.S3FileSystem.clear_instance_cache()
    rc, out, err = invoke(["verify", url, "--storage-option", f"endpoint_url={endpoint}", "--json"])
    assert rc == 0 and json.loads(out)["checked"] == 1, err
    rc, out, err = invoke(["verify", url, "--storage-option", "not-a-pair"])
    assert rc == 2 and "KEY=VALUE" in err


def _store_reads(endpoint: str, store: str) -> int:
    """GET and HEAD requests the server recorded for ``store`` (object reads and listings),
    leases left out (their heartbeat runs on a timer)."""
    from urllib.parse import unquote

    import requests

    bucket, name = store.split("/", 1)
    n = 0
    for line in requests.get(f"{endpoint}/moto-api/recorder/download-recording", timeout=30).text.splitlines():
        r = json.loads(line) if line.strip() else None
        url = unquote(r["url"]) if r else ""
        if r and r["method"] in ("GET", "HEAD") and f"/{bucket}" in url and name in url and "meta/writers" not in url:
            n += 1
    return n


def test_the_write_path_reads_nothing_per_video(clips, bucket, endpoint, tmp_path, monkeypatch):
    """Committing a video reads nothing from the store (no failure-report lookup per video, no
    GET per video on S3): extracting 12 videos makes exactly as many read requests as 3, counted
    by the server itself (moto's request recorder)."""
    import requests

    monkeypatch.chdir(tmp_path)  # the recorder appends to ./moto_recording of the server's process
    reads = {}
    for n, src in ((3, clips / "videos" / "something_falling"), (12, clips / "videos")):
        store = f"{bucket}/w{n}.zarr"
        requests.post(f"{endpoint}/moto-api/recorder/reset-recording", timeout=30)
        requests.post(f"{endpoint}/moto-api/recorder/start-recording", timeout=30)
        try:
            rc, out, err = invoke(["extract", str(src), "--store", f"s3://{store}", *COMMON])
        finally:
            requests.post(f"{endpoint}/moto-api/recorder/stop-recording", timeout=30)
        assert rc == 0 and f"{n} extracted" in out, err
        reads[n] = _store_reads(endpoint, store)
    assert reads[3] > 0 and reads[12] == reads[3], reads


def test_where_the_server_ignores_conditional_writes(bucket):
    """A server that ignores ``If-None-Match`` (some S3-compatible ones): every create overwrites.
    Here the same real endpoint, reached through Files whose create drops the condition. A
    writer id held by a live process is still refused (the lease is looked at first), and a
    holder whose lease was overwritten in the same instant finds out by its heartbeat and
    commits nothing more."""
    from clipcache.stores.base import Files, dump_json
    from clipcache.stores.leases import WriterLease

    class IgnoresConditions(Files):
        def create(self, rel: str, data: bytes) -> bool:
            self.put(rel, data)  # what such a server does with a conditional PUT
            return True

    files = IgnoresConditions(f"{bucket}/ignoring", s3fs.S3FileSystem())
    a = WriterLease(files, "w1", "the store", ttl=0.6)  # heartbeat every 0.2 s
    a.acquire()
    try:
        with pytest.raises(StoreLocked, match="writer w1 of the store is already running"):
            WriterLease(files, "w1", "the store").acquire()
        a.check()  # still ours
        # another process that looked before our create overwrites our lease (the instant race)
        files.put("meta/writers/w1.json", dump_json({"token": "other", "pid": 1, "host": "elsewhere",
                                                     "heartbeat": time.time()}))
        deadline = time.monotonic() + 10
        while a.held and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StoreLocked, match="lost its lease"):
            a.check()  # what runs before each commit record
    finally:
        a.release()


def test_an_unreachable_endpoint_or_bucket_is_one_line(monkeypatch):
    """The object store client's own errors (botocore's are not OSErrors) end in one line, exit 2."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    for command in (["info", "s3://bucket/a.zarr"], ["convert", "s3://bucket/a.zarr", "s3://bucket/b.zarr"]):
        code, out, err = invoke([*command, "--storage-option", f"endpoint_url=http://127.0.0.1:{port}",
                                 "--storage-option", 'config_kwargs={"retries": {"max_attempts": 1}}'])
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (command, err)
        assert "check --storage-option" in err and f"127.0.0.1:{port}" in err, err  # convert honours them too
