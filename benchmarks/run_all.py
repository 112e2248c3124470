"""Run every benchmark script of the project in one go and write benchmarks/RESULTS.md.

Each script measures its comparisons side by side in one run (ratios, not absolute goals in
tests); this collects their printed tables with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from _machine import cpu_model  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (script, title, args of the full run, args with --quick)
SCRIPTS = [
    ("extract.py", "Extraction", [], ["--quick"]),
    ("decode.py", "Decoding per core, every installed backend", [], ["--quick"]),
    ("malloc.py", "A decode worker with malloc as the system has it and as extract sets it", [],
     ["--rounds", "1", "--clips", "1", "--passes", "2"]),
    ("eval.py", "Evaluation from the cache", [], []),
    ("train.py", "Training from the cache vs. running the encoder in the loop", [], ["--quick"]),
    ("backbone.py", "Backbone methods: full vs. partial caching", [], ["--quick"]),
    ("query.py", "Query latency and FAISS", [], ["--quick"]),
    ("b2n_select.py", "Base-to-novel choices, settled on a selection set (read by accuracy.py and b2n_clips.py)",
     [], ["--quick"]),
    ("accuracy.py", "Accuracy on the synthetic benchmark per challenge",
     [], ["--quick"]),
    ("b2n_clips.py", "Base-to-novel as the clips per class grow", [], ["--videos-per-class", "4"]),
    ("million.py", "A store of a million videos: open, read a column, evaluate, write",
     [], ["--videos", "100000", "--episodes", "1000"]),
    ("toy_limits.py", "What the toy CLIP does not know, and why", [], ["--steps", "50", "--pretrain-steps", "20"]),
    ("transfer.py", "Few-shot heads trained on the benchmark, on a second style", [], ["--quick"]),
]


def machine() -> str:
    cpu = cpu_model()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each script's quick mode (tiny model)")
    ap.add_argument("--only", default=None, help="comma-separated script names")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    a = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    only = set(a.only.split(",")) if a.only else None
    parts = ["# clipcache benchmark results\n", f"Machine: {machine()}  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"mode: {'quick (tiny model)' if a.quick else 'full'}\n"]
    for script, title, full_args, quick_args in SCRIPTS:
        if only and script not in only:
            continue
        args = quick_args if a.quick else full_args
        cmd = [sys.executable, str(HERE / script), *args]
        t0 = time.time()
        print(f"== {script}", flush=True)
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        took = time.time() - t0
        print(r.stdout[-4000:], flush=True)
        parts.append(f"## {title}\n\n`python benchmarks/{script} {' '.join(args)}`"
                     f" ({took:.0f} s, exit {r.returncode})\n")
        parts.append(r.stdout.strip() + "\n")
        if r.returncode != 0:
            parts.append("```\n" + r.stderr.strip()[-3000:] + "\n```\n")
    Path(a.out).write_text("\n".join(parts))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
