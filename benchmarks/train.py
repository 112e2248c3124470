"""Training from the cache: step time against the FLOP floor and against the encoder in the loop.

One run prints, side by side, for each from-cache episodic method (MA-FSAR TPCM + OTAM, CLIP-FSAR
head; 5-way 1-shot, 1 query per class, T = 8, ViT-B-32 sizes, random weights):

- the training step as ``clipcache train`` runs it (resident features on the device, a step's
  episodes drawn as index arrays, one forward and backward for all of them, AdamW) with one
  episode per step, and its FLOP floor: forward+backward FLOPs / the GEMM rate measured in the
  same run at the same thread count. Goal on the CPU: step / floor <= 1.5;
- the encoder-in-the-loop step (the frozen ViT runs over the episode's frames first, as reference
  code does every step; pixels are random and already preprocessed, so decoding is not counted)
  and the ratio. Goal on a GPU: >= 20x;
- the per-episode cost at 1, 8 and 32 episodes per step. Goal on a GPU: <= 0.3 ms at 32;

then the all-way linear probe's step and ratio, ``train``'s start-up on a 60-video store in fresh
processes (``train_rows.startup_rows``), and (``--backbone``) the fetch share of the
backbone methods' steps from ``benchmarks/backbone.py``. The rows come from
``benchmarks/train_rows.py`` (``ROWS``), which a GPU script can import and call with its device.

Run: ``python benchmarks/train.py [--tiny] [--steps 10] [--threads N] [--device auto] [--backbone]
[--only steps|startup]``.
``--tiny`` (alias ``--quick``): the 4-block test model's sizes, to check the script runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import cpu_model, load_average  # noqa: E402


def machine(device: str) -> str:
    import torch

    from cachekit.encoder import pick_device

    dev = torch.device(pick_device(device))
    out = (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
           f"load average {load_average():.1f} at start")
    if dev.type == "cuda":
        out += f", GPU {torch.cuda.get_device_name(dev)}"
    return out + f", {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", "--quick", action="store_true", help="the 4-block test model's sizes")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backbone", action="store_true", help="also the fetch share of backbone steps")
    ap.add_argument("--only", choices=("steps", "startup"), default=None,
                    help="only the step rows (methods and probe) or only the start-up rows")
    args = ap.parse_args(argv)

    import torch

    import train_rows as tr
    from cachekit.cpu import keep_freed_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine(args.device)}")
    print(f"malloc: {keep_freed_memory()} (as train does: both sides of every ratio run under it)")
    print(f"model: {'test model (tiny)' if args.tiny else 'ViT-B-32'}, random weights; 5-way 1-shot, "
          "1 query per class, T = 8\n")
    if args.only != "startup":
        rows = tr.method_rows(args.device, args.tiny, steps=args.steps)
        print(tr.markdown(rows, tr.METHOD_COLUMNS))
        print("\nfloor = forward+backward FLOPs / GEMM rate (the faster of the step's FFN product and a 1024^3 "
              "product, float32, same threads); goals: CPU step / floor <= 1.5; GPU ratio >= 20x and "
              "<= 0.3 ms/episode at 32 episodes per step.\n")
        print(tr.markdown(tr.probe_rows(args.device, args.tiny, steps=args.steps), tr.PROBE_COLUMNS))
        print()
    if args.only == "steps":
        return 0
    print(tr.markdown(tr.startup_rows(), tr.startup_columns()))
    print("\ngoal: `train`'s fixed start-up (after `import torch`, to the first step) <= 2 s on a small store; "
          "fresh processes, one thread, the best of 3 by time after torch; the step-0 validation (the untrained "
          "baseline) scales with --val-episodes and the validation set's distinct videos.")
    if args.backbone:
        print()
        print(tr.markdown(tr.backbone_rows(args.device, args.tiny), tr.BACKBONE_COLUMNS))
        print("\nfetch = reading the batch (cached tokens from the store, or frames decoded again); goal: <= 10%.")
    if args.tiny:
        print("\n[--tiny: the test model's sizes; ratios are not comparable with the goals]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
