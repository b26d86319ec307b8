"""minilm-l6 int8 in ONNX Runtime: quantwise's exports against ONNX Runtime's own dynamic quantizer.

Times, in one process, at batch 1 and batch 32, sequence 128, in rounds: each round runs every
runner for a short block of consecutive calls and keeps all but the first (so load changes on a
shared machine hit every runner alike, while the previous runtime's still-spinning thread pool,
which would slow a single interleaved call by 10x, does not):

- ONNX Runtime float (the float model through the torch.export-based exporter),
- ONNX Runtime ``quantize_dynamic`` of that float file (the peer: per-tensor uint8 activations),
- quantwise ``dynamic`` exported with ``quantwise export --to onnx`` (per-token int8 activations,
  same numerics as the PyTorch model),
- quantwise ``static-pt2e`` (calibrated int8 activations, x86 quantizer) exported the same way,
- the same torchao dynamic int8 model under ``torch.compile`` (PyTorch's fastest int8 path),
- quantwise ``dynamic-xnnpack`` exported to an ExecuTorch ``.pte`` (XNNPACK, one sample per call:
  batch 32 is 32 calls),

and scores each against the float model on the evaluation split (mean cosine). Writes
benchmarks/results/onnx-dynamic-minilm.json with the machine, versions and load average.

Caveat: in an earlier run on a loaded machine (load average ~12 on 2 cores) the torchao +
torch.compile row ran batch 1 at 1.4 s per call; on the idle machine (last run, load ~1.5) it
ran 9.9 ms. Compare rows within one run only.

    PYTHONPATH=src .venv/bin/python benchmarks/onnx_dynamic_minilm.py            # 2 threads
    PYTHONPATH=src .venv/bin/python benchmarks/onnx_dynamic_minilm.py --rounds 100 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "onnx-dynamic-minilm.json"
TORCHAO = "torchao dynamic + torch.compile"
STATIC = "quantwise static-pt2e -> onnx"
PEER = "onnxruntime quantize_dynamic (peer)"
EXECUTORCH = "quantwise dynamic-xnnpack -> executorch"
VNNI_ONLY = "quantwise dynamic -> onnx --vnni-only"  # ONNX Runtime's uint8 x int8 layout: faster on VNNI/AMX, wrong on AVX2-only CPUs


def ort_runner(path: Path, threads: int):
    from quantwise.export.onnx_target import load

    return load(path, threads)


def build(threads: int, workdir: Path) -> tuple[dict, dict, object]:
    from quantwise import api
    from quantwise.evaluate.runtime import compiled
    from quantwise.export import export_artifact
    from quantwise.export.formats import target_for
    from quantwise.peers import onnxruntime as peer

    bundle = api.load_model("minilm-l6")
    quantized = api.quantize(bundle, "dynamic")
    artifact = api.save(quantized, workdir / "dynamic")
    export = export_artifact(artifact, "onnx", bundle=bundle, samples=len(bundle.evaluation), threads=threads)
    fast = export_artifact(artifact, "onnx", bundle=bundle, samples=len(bundle.evaluation), threads=threads, vnni_only=True, out=workdir / "vnni-only.onnx")
    static = export_artifact(api.save(api.quantize(bundle, "static-pt2e"), workdir / "static"), "onnx", bundle=bundle, samples=len(bundle.evaluation), threads=threads)
    mobile = export_artifact(api.save(api.quantize(bundle, "dynamic-xnnpack"), workdir / "xnnpack"), "executorch", bundle=bundle, samples=len(bundle.evaluation), threads=threads)
    float_onnx = peer.export_float(bundle, workdir / "float.onnx")
    ort_dynamic = peer.quantize_dynamic(float_onnx, workdir / "ort-dynamic.onnx")
    runners = {
        "onnxruntime float": ort_runner(float_onnx, threads),
        PEER: ort_runner(ort_dynamic, threads),
        "quantwise dynamic -> onnx": ort_runner(export.path, threads),
        VNNI_ONLY: ort_runner(fast.path, threads),
        STATIC: ort_runner(static.path, threads),
        TORCHAO: compiled(quantized.quantized.module),
        EXECUTORCH: target_for("executorch").load(mobile.path, threads),
    }
    sizes = {"onnxruntime float": float_onnx.stat().st_size / 1e6, PEER: ort_dynamic.stat().st_size / 1e6,
             "quantwise dynamic -> onnx": export.size_mb, VNNI_ONLY: fast.size_mb, STATIC: static.size_mb, EXECUTORCH: mobile.size_mb, TORCHAO: sum(p.stat().st_size for p in artifact.iterdir() if p != export.path) / 1e6}  # the .onnx was written in there
    facts = {"sizes_mb": sizes, "parity": export.parity.to_dict(), "export_notes": export.notes, "static_parity": static.parity.to_dict(), "executorch_parity": mobile.parity.to_dict(),
             "eager": quantized.quantized.module}
    return runners, facts, bundle


def cosine_to_float(runners: dict, bundle) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        batches = list(bundle.evaluation.batches(32))
        reference = torch.cat([bundle.model(*inputs) for inputs, _ in batches])
        return {name: F.cosine_similarity(torch.cat([run(*inputs).float() for inputs, _ in batches]), reference).mean().item()
                for name, run in runners.items()}


def time_in_blocks(runners: dict, inputs: tuple, rounds: int, block: int) -> dict[str, dict[str, float]]:
    from quantwise.evaluate.latency import alternating, paired_ratios

    out = {}
    blocks = alternating(runners, inputs, rounds, block)
    for name, got in blocks.items():
        t = sorted(x for b in got for x in b)
        ratios = paired_ratios(blocks, name, PEER)
        out[name] = {"median_ms": statistics.median(t), "p90_ms": t[int(0.9 * (len(t) - 1))], "min_ms": t[0], "calls": len(t),
                     "vs_peer": statistics.median(ratios), "vs_peer_range": [ratios[0], ratios[-1]]}  # < 1: faster than ORT's own quantizer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="rounds of blocks (10 calls per block at batch 1, 2 at batch 32)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    from quantwise.evaluate.latency import batch_of
    from quantwise.versions import machine, versions

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="onnx-dynamic-minilm-") as tmp:
        runners, facts, bundle = build(args.threads, Path(tmp))
        example = bundle.example_inputs(1)
        latency = {str(b): time_in_blocks(runners, batch_of(example, b), args.rounds, 10 if b == 1 else 2) for b in (1, 32)}
        # the compiled model would recompile for every new batch size; its eager twin computes the same
        cosine = cosine_to_float({**runners, TORCHAO: facts.pop("eager")}, bundle)
    result = {
        "model": "minilm-l6", "sequence": 128, "threads": args.threads, "latency": latency, "cosine_to_float": cosine,
        "evaluation": bundle.evaluation.description, **facts,
        "load_average": {"before": load_before, "after": os.getloadavg(), "cores": os.cpu_count()},
        "machine": machine(), "versions": versions(),
        "notes": ["rounds of blocks: each round runs every runner for a block of calls (the first one not kept); vs_peer = median over rounds "
                  "of (this runner's median in the round / the peer's median in the same round), vs_peer_range its min and max",
                  "cosine of the torchao row measured with its eager module (same weights and numerics)",
                  "the machine is shared: compare ratios within this file, not absolute numbers across files"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    for b, rows in latency.items():
        for name, row in rows.items():
            print(f"batch {b:>2}  {name:38s} {row['median_ms']:8.2f} ms (p90 {row['p90_ms']:.2f})  x{row['vs_peer']:.3f} of peer per round  cosine {cosine[name]:.5f}")
    print(f"load average before/after: {load_before} / {os.getloadavg()} on {os.cpu_count()} cores; wrote {args.out}")


if __name__ == "__main__":
    main()
