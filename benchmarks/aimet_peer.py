"""AIMET's AdaRound (the peer issue 20 names) on efficientnet-lite0, beside quantwise's static-adaround, on
the same calibration crops, the same bits (int8 per-channel weights, 8-bit activations) and the same
number of AdaRound iterations per layer; fidelity against float on the same evaluation crops.

AIMET (``aimet-torch`` on PyPI) is a benchmark-only dependency: it requires torchvision, which has no
build for torch 2.13, so it is installed with ``--no-deps`` into a folder of its own (not the venv) and run with a
stand-in ``torchvision`` module (AIMET imports it at start-up for data-set helpers that AdaRound does
not use). AIMET's result is its QuantSim model (fake quantization in PyTorch): that is AIMET's own
runtime for judging accuracy; quantwise's row is its int8 PT2E model. Writes
benchmarks/results/aimet-efficientnet-lite0.json.

    .venv/bin/python benchmarks/aimet_peer.py --install      # once: AIMET and its pure-Python dependencies into ~/.cache/quantwise/aimet-pkgs
    .venv/bin/python benchmarks/aimet_peer.py [ITERATIONS]   # default 200 (quantwise's default); ~10 min on 2 threads
"""
from __future__ import annotations

import copy
import importlib.machinery
import json
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = Path.home() / ".cache" / "quantwise" / "aimet-pkgs"  # beside the AutoRound peer's, outside the venv
OUT = HERE / "results" / "aimet-efficientnet-lite0.json"
AIMET = "aimet-torch==2.42.0"
# what AIMET imports at start-up besides torch/numpy/onnx (pure Python, installed beside it)
AIMET_DEPS = ["bokeh>=3.3.0,<=3.6.3", "holoviews", "hvplot>=0.10.0", "networkx", "pandas", "scikit-learn", "tensorboard",
              "jsonschema", "psutil", "tqdm", "scipy", "onnx_ir>=0.1.16", "onnxscript>=0.2.0"]


def install() -> None:
    pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(TARGET)]
    subprocess.run(pip + ["--no-deps", AIMET], check=True)
    subprocess.run(pip + AIMET_DEPS, check=True)
    for shadow in TARGET.glob("numpy*"):  # the venv's numpy must win: AIMET works with it
        subprocess.run(["rm", "-rf", str(shadow)], check=True)


class _StandIn(types.ModuleType):
    """A module whose every attribute is a placeholder class or sub-module (AIMET's start-up imports of torchvision)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[:1].isupper():
            value = type(name, (), {})
        else:
            value = _StandIn(f"{self.__name__}.{name}")
            value.__spec__ = importlib.machinery.ModuleSpec(value.__name__, None)
            sys.modules[value.__name__] = value
        setattr(self, name, value)
        return value


def _torchvision_stand_in() -> None:
    tv = _StandIn("torchvision")
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    sys.modules["torchvision"] = tv
    for sub in ("datasets", "transforms", "ops", "models"):
        getattr(tv, sub)


def _aimet_setup(bundle):
    """AIMET's documented preparation: its model preparer, then BatchNorms folded into the convs."""
    from aimet_torch.batch_norm_fold import fold_all_batch_norms
    from aimet_torch.model_preparer import prepare_model

    config = str(next(TARGET.glob("aimet_torch/common/quantsim_config/default_config_per_channel.json")))
    calibration = [x for x, _ in bundle.calibration.batches(32)]
    dummy = tuple(t[:1] for t in calibration[0])
    model = prepare_model(copy.deepcopy(bundle.model).eval())  # folding must not touch the bundle's float model
    fold_all_batch_norms(model, input_shapes=None, dummy_input=dummy)
    return model, config, calibration, dummy


def _quantsim(model, config: str, calibration, dummy, encodings: Path | None = None):
    """A QuantSim of ``model`` (8-bit per-channel weights, 8-bit activations, SQNR-searched ranges); with
    ``encodings``, AdaRound's weight encodings frozen in; activation ranges from the calibration crops."""
    import torch
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.quantsim import QuantizationSimModel

    sim = QuantizationSimModel(model, dummy_input=dummy, quant_scheme=QuantScheme.post_training_tf_enhanced,
                               default_param_bw=8, default_output_bw=8, config_file=config)
    if encodings is not None:
        sim.set_and_freeze_param_encodings(encoding_path=str(encodings))

    def calibrate(m, _):
        with torch.no_grad():
            for x in calibration:
                m(*x)

    sim.compute_encodings(calibrate, None)
    return sim.model


def _aimet_nearest(bundle):
    """AIMET's QuantSim with nearest rounding (no AdaRound): separates what AdaRound gains from what the
    simulation as set up here loses."""
    model, config, calibration, dummy = _aimet_setup(bundle)
    started = time.perf_counter()
    return _quantsim(model, config, calibration, dummy), time.perf_counter() - started


def _aimet_adaround(bundle, iterations: int, work: Path):
    """AIMET's documented AdaRound flow: fold BatchNorms, apply_adaround (8-bit per-channel weights),
    then a QuantSim with those weight encodings frozen and activation encodings computed on the calibration crops."""
    from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters
    from aimet_torch.common.defs import QuantScheme

    model, config, calibration, dummy = _aimet_setup(bundle)

    class Loader(list):
        batch_size = 32

    loader = Loader((x[0] if len(x) == 1 else x) for x in calibration)
    params = AdaroundParameters(data_loader=loader, num_batches=len(loader), default_num_iterations=iterations)
    started = time.perf_counter()
    rounded = Adaround.apply_adaround(model, dummy, params, path=str(work), filename_prefix="adaround", default_param_bw=8,
                                      default_quant_scheme=QuantScheme.post_training_tf_enhanced, default_config_file=config)
    return _quantsim(rounded, config, calibration, dummy, work / "adaround.encodings"), time.perf_counter() - started


def main(iterations: int = 200, threads: int = 2) -> None:
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(TARGET))
    _torchvision_stand_in()
    import torch

    torch.set_num_threads(threads)
    from quantwise import api
    from quantwise.evaluate.metrics import fidelity, outputs
    from quantwise.versions import machine, versions

    bundle = api.load_model("efficientnet-lite0")
    reference = outputs(bundle.model, bundle.evaluation)
    rows = {}
    spec = f"static:path=pt2e,rounding=adaround,rounding_iterations={iterations}"
    started = time.perf_counter()
    ours = api.quantize(bundle, spec)
    rows["quantwise static-adaround (int8 PT2E model)"] = {
        "spec": spec, "seconds": round(time.perf_counter() - started, 1),
        **fidelity("classification", reference, outputs(ours.quantized.module, bundle.evaluation), None)}
    print(rows, flush=True)
    with tempfile.TemporaryDirectory(prefix="aimet-") as tmp:
        for name, run in (("AIMET QuantSim, nearest rounding (no AdaRound)", lambda: _aimet_nearest(bundle)),
                          ("AIMET AdaRound (QuantSim)", lambda: _aimet_adaround(bundle, iterations, Path(tmp)))):
            try:
                model, seconds = run()
                rows[name] = {"seconds": round(seconds, 1), **fidelity("classification", reference, outputs(model, bundle.evaluation), None)}
            except Exception as err:  # the peer's failure is a result too: recorded, not hidden
                rows[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    print(rows, flush=True)
    OUT.write_text(json.dumps({
        "model": "efficientnet-lite0", "iterations": iterations, "threads": threads, "calibration_crops": len(bundle.calibration),
        "evaluation_crops": len(bundle.evaluation), "bits": "int8 per-channel weights, 8-bit activations",
        "aimet": AIMET + " (installed --no-deps into ~/.cache/quantwise/aimet-pkgs, torchvision stood in)", "rows": rows,
        "machine": machine(), "versions": versions()}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(HERE.parent)}")


if __name__ == "__main__":
    if "--install" in sys.argv:
        install()
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
