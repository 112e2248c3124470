"""The query encoder of an index: exported beside the prototypes, loaded back by ``clipcache query``.

The module ``pixels [T, 3, S, S] -> features [T, D]`` is the frozen encoder followed by the method's
query path (:func:`query_encoder_module`). :func:`export_encoder` writes it with ``torch.export``
(``encoder.pt2``), as Python code over ATen ops plus a weights file (a fast start: no open_clip, no
``torch.export`` deserialiser), and as ONNX when ``onnx`` is installed. :func:`load_query_encoder`
reads it back.
"""

from __future__ import annotations

import io
import logging
import math
import os
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import RunError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ENCODER_PT2 = "encoder.pt2"
ENCODER_GRAPH = "encoder_graph.py"
ENCODER_WEIGHTS = "encoder_weights.pt"
ENCODER_ONNX = "encoder.onnx"
# names the exported graph's Python code may use; anything else: no fast path (encoder.pt2 only)
GRAPH_GLOBALS = ("torch", "device", "inf", "nan", "NoneType", "fx_pytree", "pytree")


# --------------------------------------------------------------------------- query encoder
def query_encoder_module(enc, method):
    """``pixels [T, 3, S, S] -> query features [T, D]``: frozen encoder, then the method's query path."""
    import torch
    from torch import nn

    from ..methods.base import CacheNeeds, VideoBatch

    class QueryEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = enc.model.visual  # the weights the graph uses (not the text tower)
            self.method = method
            self._enc = (enc,)  # not a submodule: its model's text tower stays out of the export

        def forward(self, pixels):
            needs = self.method.needs if self.method is not None else CacheNeeds(emb=True)
            one = torch.zeros(1, dtype=torch.long, device=pixels.device)
            batch = VideoBatch(index=one, labels=one - 1)
            if needs.emb or needs.cls or needs.tokens_at:
                out = self._enc[0].encode_frames(pixels, tuple(needs.tokens_at))
                batch.emb = out.emb[None].float()  # [1, T, D']
                batch.cls = out.cls[None].float()  # [1, T, W]
                batch.tokens = {b: t[None].float() for b, t in out.tokens.items()}  # {L: [1, T, N+1, W]}
            if needs.pixels:
                batch.pixels = pixels[None]  # [1, T, 3, S, S]
            feats = batch.emb if self.method is None else self.method.query_features(batch)
            return feats[0]  # [T, D]

    return QueryEncoder().eval()


def export_encoder(enc, method, frames: int, out_dir: Path, onnx: bool = True) -> dict:
    """Write the query encoder to ``out_dir``; returns what ``index.json`` records about it."""
    import torch

    size = int(enc.preprocess_cfg["size"])
    module = query_encoder_module(enc, method)
    example = torch.zeros(frames, 3, size, size)
    with torch.no_grad():
        try:
            feats = module(example)
        except NotImplementedError as err:  # a method without the index hooks it needs
            raise RunError(f"cannot index with this run: {err}") from err
    info = {"pt2": None, "input": [frames, 3, size, size], "dim": int(feats.shape[-1]),
            "torch": torch.__version__, "graph": None, "weights": None, "onnx": None, "notes": []}
    try:
        with torch.no_grad(), _printed_to_log("torch.export"), _fused_attention(module):
            ep = torch.export.export(module, (example,))
    except Exception as err:  # noqa: BLE001 - the exporter raises many types; query then runs eagerly
        info["notes"].append(f"torch.export failed ({str(err).splitlines()[0][:200]}); query will load "
                             "open_clip and the run's method to encode (slow start)")
        return info
    _saved(lambda f: torch.export.save(ep, f), out_dir / ENCODER_PT2)
    info["pt2"] = ENCODER_PT2
    try:
        code, weights = _graph_code(ep)
    except ValueError as err:
        info["notes"].append(f"no fast-start graph ({err}); query loads {ENCODER_PT2}")
    else:
        (out_dir / ENCODER_GRAPH).write_text(code)
        _saved(lambda f: torch.save(weights, f), out_dir / ENCODER_WEIGHTS)
        info["graph"], info["weights"] = ENCODER_GRAPH, ENCODER_WEIGHTS
    if onnx:
        info["onnx"], note = _export_onnx(module, example, out_dir)
        # the graph and its external weights file(s) (encoder.onnx.data), which travel together
        info["onnx_files"] = sorted(p.name for p in out_dir.glob(ENCODER_ONNX + "*")) if info["onnx"] else []
        if note:
            info["notes"].append(note)
    return info


def _saved(save, path: Path) -> None:
    """``save(file)`` into memory, then the bytes to ``path``: torch's archive writer turns a full disk
    into a RuntimeError and then aborts the process in C++; a plain write gives an OSError."""
    buf = io.BytesIO()
    save(buf)
    path.write_bytes(buf.getbuffer())


@contextmanager
def _fused_attention(module):
    """Inside, the module's ``nn.MultiheadAttention`` layers call torch's fused inference kernel
    (``torch._native_multi_head_attention``) directly, so that ``torch.export`` records it: eager
    inference takes that fast path on its own, but tracing falls back to separate projections and
    SDPA, 1.5x slower on the CPU (ViT-B-32, T = 8: 533 ms against 346 ms, measured side by side).
    Layers with masks, or a layout the kernel lacks, keep their own forward. Outputs are unchanged
    (the same kernel as eager inference)."""
    import types

    import torch
    from torch import nn

    def fused(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
              average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None or is_causal:
            return nn.MultiheadAttention.forward(self, query, key, value, key_padding_mask, need_weights,
                                                 attn_mask, average_attn_weights, is_causal)
        out, _ = torch._native_multi_head_attention(  # [B, N, W] (batch first)
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.out_proj.weight, self.out_proj.bias, None, False)
        return out, None

    layers = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention) and m.batch_first
              and m._qkv_same_embed_dim and m.in_proj_bias is not None and m.bias_k is None
              and not m.add_zero_attn and type(m).forward is nn.MultiheadAttention.forward
              and hasattr(torch, "_native_multi_head_attention")]
    for m in layers:
        m.forward = types.MethodType(fused, m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


def _graph_code(ep) -> tuple[str, list]:
    """The exported program as Python code over ATen ops + its weights in argument order."""
    from torch.export.graph_signature import InputKind, OutputKind

    sig = ep.graph_signature
    weights, users = [], 0
    for spec in sig.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            users += 1
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = ep.state_dict.get(spec.target)
            if t is None:
                t = ep.constants.get(spec.target)
            if t is None:
                raise ValueError(f"no value for {spec.target}")
            weights.append(t.detach().contiguous())
        else:
            raise ValueError(f"input kind {spec.kind.name} is not supported")
    if users != 1 or [s.arg.name for s in sig.input_specs].index(sig.user_inputs[0]) != len(sig.input_specs) - 1:
        raise ValueError("the graph must take the pixels as its one, last input")
    if any(s.kind != OutputKind.USER_OUTPUT for s in sig.output_specs):
        raise ValueError("the graph mutates buffers")
    pc = ep.graph_module.graph.python_code(root_module="self")
    unknown = sorted(set(pc.globals) - set(GRAPH_GLOBALS))
    if unknown:
        raise ValueError(f"the graph code uses {', '.join(unknown)}")
    if any(n.op in ("call_module", "get_attr") for n in ep.graph_module.graph.nodes):
        raise ValueError("the graph calls submodules")
    header = ('"""The exported query encoder as Python over ATen ops (torch.export graph, written by\n'
              '`clipcache index`). forward(self, *weights, pixels) -> (features,)."""\n')
    return header + pc.src, weights


@contextmanager
def _printed_to_log(who: str):
    """What a library ``print``s meanwhile goes to the debug log, never to the caller's stdout
    (torch.onnx announces its steps there, which would break ``--json`` output)."""
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            yield
    finally:
        for line in buf.getvalue().splitlines():
            if line.strip():
                log.debug("%s: %s", who, line)


def _export_onnx(module, example, out_dir: Path) -> tuple[str | None, str | None]:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return None, "ONNX export skipped: the onnx package is not installed (pip install onnx onnxscript)"
    import torch

    try:
        with torch.no_grad(), _printed_to_log("torch.onnx"):
            torch.onnx.export(module, (example,), str(out_dir / ENCODER_ONNX), input_names=["pixels"],
                              output_names=["features"], dynamo=True)
    except Exception as err:  # noqa: BLE001 - optional artefact: any exporter failure is a note
        for p in out_dir.glob("encoder.onnx*"):
            p.unlink()
        return None, f"ONNX export failed ({str(err).splitlines()[0][:200]})"
    return ENCODER_ONNX, None


# --------------------------------------------------------------------------- encoder artefact
def load_query_encoder(root: str | os.PathLike, meta: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """The exported query encoder of an index: ``pixels [T, 3, S, S] -> features [T, D]``.

    Runs the graph's Python code with its weights when the index has it and was written by this
    torch version; else deserialises ``encoder.pt2`` with ``torch.export.load`` (slower to start).
    """
    import torch

    root = Path(root)
    info = meta["encoder"]
    if info.get("graph") and info.get("torch") == torch.__version__:
        import torch.fx._pytree as fx_pytree
        import torch.utils._pytree as pytree

        namespace = {"torch": torch, "device": torch.device, "inf": math.inf, "nan": math.nan,
                     "NoneType": type(None), "fx_pytree": fx_pytree, "pytree": pytree}
        code = (root / info["graph"]).read_text()
        exec(compile(code, str(root / info["graph"]), "exec"), namespace)  # noqa: S102 - our own export
        forward = namespace["forward"]
        weights = torch.load(root / info["weights"], weights_only=True, mmap=True)

        def run(pixels: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return forward(None, *weights, pixels.contiguous())[0]

        return run
    if info.get("pt2"):
        program = torch.export.load(str(root / info["pt2"])).module()
    else:  # the method's query path could not be exported: run it eagerly (loads open_clip)
        from ..runs import load_run, load_store_encoder

        enc = load_store_encoder(meta["cache_key"], meta.get("pretrained"), device="cpu")
        method = None if meta.get("run") is None else load_run(
            meta["run"], cache_key=meta["cache_key"], backbone=enc, device="cpu",
            pretrained=meta.get("pretrained"))[0]
        program = query_encoder_module(enc, method)

    def run_program(pixels: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return program(pixels.contiguous())

    return run_program


__all__ = [
    "ENCODER_GRAPH",
    "ENCODER_ONNX",
    "ENCODER_PT2",
    "ENCODER_WEIGHTS",
    "export_encoder",
    "load_query_encoder",
    "query_encoder_module",
]
