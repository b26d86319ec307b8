"""efficientnet-lite0, static int8 PT2E: nearest rounding against learned rounding (AdaRound), in
PyTorch and through the ONNX Runtime export (issue 20's classic-model target).

Both recipes calibrate the same grid (histogram observer, per-channel weights); ``static-adaround``
then learns each conv/linear weight's rounding on the calibration crops. Reports, against the
float model on the evaluation crops: top-1 agreement (a count: one crop is 0.004), KL divergence
and logit SQNR, for the PyTorch int8 model and its ONNX Runtime export (parity-checked), plus
ONNX Runtime's own quantize_static for reference, and the wall time to quantize. Writes
benchmarks/results/efficientnet-adaround.json.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/efficientnet_adaround.py 1    # threads; ~10 min at 1 thread
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "efficientnet-adaround.json"
RECIPES = {"nearest": "static-pt2e", "adaround": "static-adaround"}
PEER = "onnxruntime static int8 (its own quantizer)"


def main(threads: int = 2) -> None:
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    from quantwise import api
    from quantwise.config import parse_recipe, recipe_name
    from quantwise.evaluate.metrics import fidelity, outputs
    from quantwise.errors import QuantwiseError
    from quantwise.export import export_artifact
    from quantwise.export.formats import target_for
    from quantwise.export.parity import check
    from quantwise.export.onnx_target import load
    from quantwise.peers import onnxruntime as peer
    from quantwise.versions import machine, versions

    bundle = api.load_model("efficientnet-lite0")
    onnx_target = target_for("onnx")
    reference = outputs(bundle.model, bundle.evaluation)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="effnet-adaround-") as tmp:
        work = Path(tmp)
        for name, spec in RECIPES.items():
            started = time.perf_counter()
            result = api.quantize(bundle, spec)
            seconds = time.perf_counter() - started
            art = api.save(result, work / name)  # verifies a bit-identical reload
            try:
                exported = export_artifact(art, "onnx", bundle=bundle, samples=len(bundle.evaluation), threads=threads)
                path, parity, refused = exported.path, exported.parity, None
            except QuantwiseError as err:  # the parity gate refused the file: measure it anyway, and say so
                path, refused = work / f"{name}-refused.onnx", str(err)
                loaded = api.load(art, arch=api.architecture(bundle))
                onnx_target.write(loaded.module, tuple(t.clone() for t in bundle.evaluation.example(2)), path, True, bundle.calibration)
                onnx_target.make_portable(path)
                parity = check(load(path, threads), loaded.module, bundle.model.eval(), bundle.evaluation, True)
            runner = load(path, threads)
            with torch.no_grad():
                ort = torch.cat([torch.as_tensor(runner(*x)).float() for x, _ in bundle.evaluation.batches(32)])
            rows[name] = {
                "recipe": recipe_name(parse_recipe(spec)),
                "quantize_seconds": round(seconds, 1),
                "pytorch": fidelity("classification", reference, outputs(result.quantized.module, bundle.evaluation), None),
                "onnxruntime": fidelity("classification", reference, ort, None),
                "export_parity": parity.to_dict(),
                "export_refused": refused,
                "notes": result.quantized.notes,
                "rounding": result.quantized.meta.get("rounding"),
            }
            print(f"{name:9s} quantize {seconds:6.1f} s  " + "  ".join(
                f"{where}: agreement {rows[name][where]['agreement']:.4f} KL {rows[name][where]['kl']:.4f} SQNR {rows[name][where]['sqnr_db']:.1f} dB"
                for where in ("pytorch", "onnxruntime")), flush=True)
        float_onnx = peer.export_float(bundle, work / "float.onnx")
        theirs = load(peer.quantize_static(bundle, float_onnx, work / "ort-static.onnx"), threads)
        with torch.no_grad():
            ort_peer = torch.cat([torch.as_tensor(theirs(*x)).float() for x, _ in bundle.evaluation.batches(32)])
        rows[PEER] = {"onnxruntime": fidelity("classification", reference, ort_peer, None)}
        print(f"{PEER}: agreement {rows[PEER]['onnxruntime']['agreement']:.4f} KL {rows[PEER]['onnxruntime']['kl']:.4f}")
    result = {"model": "efficientnet-lite0", "threads": threads, "evaluation_crops": len(bundle.evaluation),
              "calibration_crops": len(bundle.calibration), "rows": rows, "load_average_after": os.getloadavg(),
              "machine": machine(), "versions": versions()}
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    import sys

    main(threads=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
