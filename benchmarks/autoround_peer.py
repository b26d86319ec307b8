"""Benchmark-only peer: Intel AutoRound (SignRound) on the zoo model smollm2-135m at int4 (asymmetric,
group size 64), measured on exactly the evaluation quantwise uses for its own ``int4-signround`` recipe.

Reproduce (AutoRound's CPU default bfloat16 tuning, ``--amp``; about 35-50 minutes on one thread of the
shared reference machine: 55-78 s per decoder block, plus the perplexity evaluations)::

    cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/autoround_peer.py \\
        --iters 200 --nsamples 128 --seqlen 512 --batch-size 4 --threads 1 --amp \\
        --json benchmarks/results/autoround-smollm2-135m.json

Without ``--amp`` AutoRound tunes in float32 like quantwise does, but on one thread a SmolLM2 block took
about 5 minutes (200 steps x 4 windows x 512 tokens, forward + backward ~1.5 s each against ~0.65 s in
bfloat16 on this AMX CPU), i.e. about 2.5 hours for the 30 blocks; that run was started and abandoned
for time.

Quick pipeline check (minutes): ``--iters 2 --nsamples 8 --seqlen 128 --json /tmp/autoround_tiny.json``.

AutoRound 0.16.1 (and datasets, pyarrow, dill, multiprocess, xxhash) lives outside the venv, in
``/root/.cache/quantwise/autoround-pkgs``; the directory is *appended* to ``sys.path`` so the
venv's torch / transformers are the ones used. Install it there (nothing in the venv changes)::

    .venv/bin/pip install --no-deps --target ~/.cache/quantwise/autoround-pkgs auto-round==0.16.1 \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pyarrow==26.0.1 xxhash==4.1.0

What is matched with quantwise's ``int4-signround`` (``WeightOnly(algorithm="signround")``):

- model: ``load_language_model("smollm2-135m")`` (HF LlamaForCausalLM, float32);
- calibration: the very same token windows, ``blocks.calibration_batches(lm, nsamples, seqlen)``
  (128 x 512 tokens of the calibration articles, disjoint from evaluation). AutoRound takes a
  non-string ``dataset`` as an iterable of samples; each window is given as
  ``{"input_ids": [1, seqlen], "attention_mask": ones}`` so the blocks see plain causal attention,
  as in evaluation. (Given bare tensors, AutoRound would build a mask from the pad token, which for
  SmolLM2 is the EOS token that separates articles; its loss mask still ignores pad = EOS positions
  and the last position of every window: AutoRound's own rule, kept.) Strings were not used: with
  ``truncation=True, max_length=seqlen`` each of the 25 calibration articles would give one window;
- SignRound per decoder block, ``iters`` steps (200), ``batch_size`` windows per step (4, as
  quantwise's SIGNROUND_BATCH; AutoRound's default is 8), learned rounding + min/max (clipping)
  tuning (AutoRound's default ``enable_minmax_tuning=True``), lr = 1/iters (AutoRound's default),
  quantized inputs from earlier blocks (its default ``enable_quanted_input=True``), seed 42;
- W4A16: bits=4, group_size=64, sym=False, everything on CPU (``device_map="cpu"``);
- lm_head (tied to the token table) is not quantized (AutoRound's default, and ``lm_head_bits=None``
  on quantwise's side for the runtime measurement).

Settings that are AutoRound's own and differ from quantwise (recorded in the JSON): tuning precision
(``--amp`` off by default here: float32 tuning like quantwise; AutoRound's CPU default casts the
model to bfloat16), the scale dtype (AutoRound default float16 scales, ``--scale-dtype``), torch.compile
of its quantization functions (its Linux default, ``--no-compile`` to switch off), best-loss
checkpointing per block (its default).

Evaluation (as quantwise's LLM tests / compare): perplexity over
``windows(token_ids(tok, lm.text.evaluation, 24576), 512, 24576)`` (48 windows) with
``quantwise.llm.perplexity.perplexity``:

- ``float32``: the float model, in this process;
- (a) ``fake_quant_float32``: a fresh float32 model whose decoder Linear weights are
  ``(q - zero) * scale`` (float32) from AutoRound's integer codes, its (float16) scales and zeros;
- (b) ``quantwise_int4_runtime``: the same codes as ``GroupQuant``s run through quantwise's int4 runtime,
  ``runtime.materialize(model, layers, WeightOnly(algorithm="rtn", lm_head_bits=None))`` (torchao int4
  CPU kernel; activations ``auto``, i.e. bfloat16 on a CPU with native bf16), plus the same with
  float32 activations.

Codes are recovered from the layers AutoRound leaves after ``quantize()`` (no export format): each
Linear keeps its fake-quantized weight plus ``scale`` / ``zp`` per group, and
``q = round(w / scale) + zp`` is checked to be an integer in 0..15 that reproduces ``w``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

AUTOROUND_PKGS = "/root/.cache/quantwise/autoround-pkgs"
EVAL_TOKENS = 24576
EVAL_CONTEXT = 512
GROUP = 64
BITS = 4


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4, help="windows per SignRound step (quantwise: 4; AutoRound default 8)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--amp", action="store_true", help="AutoRound's CPU default: tune in bfloat16 (off: float32, like quantwise)")
    p.add_argument("--scale-dtype", default="fp16", choices=("fp16", "fp32", "bf16"), help="AutoRound's scale dtype (its default fp16)")
    p.add_argument("--no-compile", action="store_true", help="disable AutoRound's torch.compile (its Linux default is on)")
    p.add_argument("--bare-tensors", action="store_true", help="give windows as bare [1, seqlen] tensors (AutoRound then masks pad=EOS tokens in attention)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/autoround-smollm2-135m.json"))
    p.add_argument("--save-codes", type=Path, default=None, help="torch.save the recovered codes here (default /tmp/autoround_codes_<iters>_<nsamples>.pt)")
    p.add_argument("--eval-only", type=Path, default=None, help="skip AutoRound; evaluate codes saved by an earlier run")
    p.add_argument("--skip-float32-activations", action="store_true", help="skip the extra int4-runtime measurement with float32 activations")
    return p.parse_args()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return platform.processor() or "unknown"


class _LossLog(logging.Handler):
    """Collect AutoRound's per-block summary lines ("loss iter 0: a -> iter k: b") and its tuning time."""

    PATTERN = re.compile(r"loss iter 0: ([0-9.e+-]+) -> iter (\d+): ([0-9.e+-]+)")

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.blocks: list[dict] = []
        self.tuning_seconds: float | None = None
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            return
        m = self.PATTERN.search(msg)
        if m:
            self.blocks.append({"loss_iter0": float(m.group(1)), "best_iter": int(m.group(2)), "best_loss": float(m.group(3))})
        t = re.search(r"quantization tuning time ([0-9.]+)", msg)
        if t:
            self.tuning_seconds = float(t.group(1))
        if record.levelno >= logging.WARNING:
            self.messages.append(f"{record.levelname}: {msg}"[:400])


def recover_codes(model, torch, nn, GroupGrid, GroupQuant) -> tuple[dict, dict]:
    """GroupQuant per decoder Linear from the layers AutoRound's quantize() leaves (weight = qdq, scale, zp)."""
    layers: dict = {}
    worst = {"max_abs_dequant_vs_autoround_weight": 0.0, "zero_min": None, "zero_max": None, "non_integer_zero": 0,
             "max_code_rounding_residual": 0.0, "scale_dtype": None, "weight_dtype": None, "layers": 0}
    grid = GroupGrid(BITS, GROUP)
    for name, m in model.named_modules():
        if not (isinstance(m, nn.Linear) and name.startswith("model.layers.")):
            continue
        scale, zp = getattr(m, "scale", None), getattr(m, "zp", None)
        if scale is None or zp is None:
            raise RuntimeError(f"{name}: AutoRound left no scale/zp (attributes: {sorted(k for k in vars(m) if not k.startswith('_'))[:20]})")
        worst["scale_dtype"], worst["weight_dtype"] = str(scale.dtype), str(m.weight.dtype)
        w = m.weight.detach().to(torch.float32)
        out, n_in = w.shape
        s = scale.detach().to(torch.float32).reshape(out, n_in // GROUP)
        z = zp.detach().to(torch.float32).reshape(out, n_in // GROUP)
        ratio = w.reshape(out, -1, GROUP) / s.unsqueeze(-1)
        q = torch.round(ratio) + z.unsqueeze(-1)
        worst["max_code_rounding_residual"] = max(worst["max_code_rounding_residual"], float((ratio - torch.round(ratio)).abs().max()))
        if float(q.min()) < 0 or float(q.max()) > 2**BITS - 1:
            raise RuntimeError(f"{name}: recovered codes outside 0..15 ({float(q.min())}..{float(q.max())})")
        worst["non_integer_zero"] += int((z != torch.round(z)).sum())
        worst["zero_min"] = float(z.min()) if worst["zero_min"] is None else min(worst["zero_min"], float(z.min()))
        worst["zero_max"] = float(z.max()) if worst["zero_max"] is None else max(worst["zero_max"], float(z.max()))
        gq = GroupQuant(q.reshape(out, n_in).to(torch.uint8).contiguous(), s.contiguous(), z.contiguous(), grid)
        diff = float((gq.dequantize() - w).abs().max())
        worst["max_abs_dequant_vs_autoround_weight"] = max(worst["max_abs_dequant_vs_autoround_weight"], diff)
        layers[name] = gq
        worst["layers"] += 1
    if not layers:
        raise RuntimeError("no quantized decoder Linear found in AutoRound's model")
    return layers, worst


def main() -> int:
    args = parse_args()
    import signal

    def _terminated(signum, _frame):  # recorded in the JSON by the handlers below instead of vanishing
        raise SystemExit(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, _terminated)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no pool of compile workers on a shared machine
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    if AUTOROUND_PKGS not in sys.path:
        sys.path.append(AUTOROUND_PKGS)  # appended: the venv's torch / transformers win
    import transformers

    from quantwise.config import WeightOnly
    from quantwise.algorithms import GroupGrid, GroupQuant
    from quantwise.llm.model import load_language_model
    from quantwise.llm.perplexity import perplexity, token_ids, windows
    from quantwise.llm.blocks import calibration_batches
    from quantwise.llm.quantize import _release
    from quantwise.llm.runtime import for_this_machine, materialize

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("autoround_peer")

    result: dict = {
        "what": "Intel AutoRound (SignRound) int4 asym g64 on smollm2-135m, on quantwise's int4-signround evaluation",
        "command": " ".join([f"OMP_NUM_THREADS={args.threads}", "PYTHONPATH=src", ".venv/bin/python"] + sys.argv),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "note": "2-core machine shared with other jobs while this ran: times are indicative only"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "status": "started",
    }

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")

    try:
        import torchao

        result["versions"]["torchao"] = torchao.__version__
    except Exception:  # noqa: BLE001
        pass

    lm = load_language_model(args.model)
    ev = windows(token_ids(lm.tokenizer, lm.text.evaluation, EVAL_TOKENS), EVAL_CONTEXT, EVAL_TOKENS)
    result["evaluation"] = {"windows": int(ev.shape[0]), "context": int(ev.shape[1]),
                            "rule": f"windows(token_ids(tokenizer, evaluation articles, {EVAL_TOKENS}), {EVAL_CONTEXT}, {EVAL_TOKENS}); quantwise.llm.perplexity.perplexity (stride = context, first token of each window not scored)"}
    t0 = time.perf_counter()
    float_ppl = perplexity(lm.model, ev)
    result["perplexity"] = {"float32": float_ppl.perplexity}
    result["evaluation"]["setting"] = float_ppl.setting
    result["evaluation"]["float32_eval_seconds"] = round(time.perf_counter() - t0, 1)
    log.info("float32 perplexity %.4f (%s)", float_ppl.perplexity, float_ppl.setting)
    save()

    settings = {
        "scheme": "W4A16", "bits": BITS, "group_size": GROUP, "sym": False, "iters": args.iters, "nsamples": args.nsamples,
        "seqlen": args.seqlen, "batch_size": args.batch_size, "gradient_accumulate_steps": 1, "seed": args.seed,
        "device_map": "cpu", "amp": bool(args.amp), "tuning_dtype": "bfloat16 (amp)" if args.amp else "float32",
        "scale_dtype": args.scale_dtype, "enable_torch_compile": not args.no_compile,
        "lr": f"AutoRound default 1/iters = {1.0 / args.iters:g}" if args.iters else None, "minmax_lr": "= lr (AutoRound default)",
        "enable_minmax_tuning": True, "enable_quanted_input": True, "lr_schedule": "linear decay to 0 (AutoRound default)",
        "best_loss_checkpoint": "AutoRound default (keeps the iteration with the lowest loss per block)",
        "lm_head": "not quantized (AutoRound default; tied to the token table); quantwise side: lm_head_bits=None",
        "calibration": ("the same token windows as quantwise's int4-signround: blocks.calibration_batches(lm, nsamples, seqlen), "
                        "calibration articles disjoint from evaluation, EOS between articles; given to AutoRound as a list of "
                        + ("bare [1, seqlen] tensors" if args.bare_tensors else "{'input_ids': [1, seqlen], 'attention_mask': ones} dicts")),
        "threads": args.threads,
    }
    result["autoround_settings"] = settings

    if args.eval_only:
        saved = torch.load(args.eval_only, weights_only=False)
        layers = {k: GroupQuant(v["qdata"], v["scale"], v["zero"], GroupGrid(BITS, GROUP)) for k, v in saved["layers"].items()}
        result.update({k: v for k, v in saved.get("meta", {}).items() if k not in ("perplexity", "machine", "command")})
        result["evaluated_from"] = str(args.eval_only)
    else:
        try:
            import auto_round
            from auto_round import AutoRound
        except Exception as err:  # noqa: BLE001
            result["status"] = f"AutoRound could not be imported: {type(err).__name__}: {err}"
            save()
            log.error(result["status"])
            return 1
        result["versions"]["auto_round"] = getattr(auto_round, "__version__", "?")
        result["versions"]["auto_round_path"] = os.path.dirname(auto_round.__file__)
        if not os.path.dirname(torch.__file__).startswith(sys.prefix):
            log.warning("torch is not the venv's: %s", torch.__file__)

        ids = calibration_batches(lm, args.nsamples, args.seqlen)
        if args.bare_tensors:
            calib = [ids[i : i + 1] for i in range(ids.shape[0])]
        else:
            calib = [{"input_ids": ids[i : i + 1], "attention_mask": torch.ones_like(ids[i : i + 1])} for i in range(ids.shape[0])]
        settings["calibration_windows"] = list(ids.shape)

        loss_log = _LossLog()
        logging.getLogger("autoround").addHandler(loss_log)
        model = load_language_model(args.model).model  # its own copy: AutoRound changes the model in place
        start = time.perf_counter()
        try:
            ar = AutoRound(
                model,
                tokenizer=lm.tokenizer,
                scheme="W4A16",
                bits=BITS,
                group_size=GROUP,
                sym=False,
                dataset=calib,
                iters=args.iters,
                nsamples=args.nsamples,
                seqlen=args.seqlen,
                batch_size=args.batch_size,
                device_map="cpu",
                seed=args.seed,
                amp=bool(args.amp),
                scale_dtype=args.scale_dtype,
                enable_torch_compile=not args.no_compile,
            )
            qmodel, _layer_config = ar.quantize()
        except BaseException as err:  # noqa: BLE001 - report why AutoRound could not run (SystemExit included)
            import traceback

            result["status"] = f"AutoRound failed: {type(err).__name__}: {err}"
            result["traceback"] = traceback.format_exc()[-4000:]
            result["autoround_warnings"] = loss_log.messages[-20:]
            save()
            log.error(result["status"])
            return 1
        seconds = time.perf_counter() - start
        torch.set_num_threads(args.threads)  # in case anything changed it
        result["quantize"] = {
            "wall_seconds": round(seconds, 1),
            "autoround_tuning_seconds": loss_log.tuning_seconds,
            "torch_threads_after": torch.get_num_threads(),
            "note": "wall time of AutoRound(...) + quantize() (calibration caching included, model loading excluded) "
                    f"on a shared 2-core machine with {args.threads} thread(s): indicative only",
        }
        result["autoround_block_losses"] = loss_log.blocks
        result["autoround_warnings"] = loss_log.messages[-20:]
        layers, check = recover_codes(qmodel, torch, nn, GroupGrid, GroupQuant)
        result["code_recovery"] = check
        log.info("AutoRound done in %.0f s; %d layers; recovery check %s", seconds, len(layers), check)
        codes_path = args.save_codes or Path(f"/tmp/autoround_codes_{args.iters}_{args.nsamples}_{args.seqlen}.pt")
        torch.save({"layers": {k: {"qdata": v.qdata, "scale": v.scale, "zero": v.zero} for k, v in layers.items()},
                    "meta": {k: result[k] for k in ("autoround_settings", "quantize", "autoround_block_losses", "code_recovery", "versions") if k in result}},
                   codes_path)
        result["codes_saved_to"] = str(codes_path)
        del qmodel, ar, model
        save()

    # (a) fake-quantized weights, float32, in a fresh float model
    model = load_language_model(args.model).model
    with torch.no_grad():
        for name, gq in layers.items():
            model.get_submodule(name).weight.data = gq.dequantize(torch.float32)
    t0 = time.perf_counter()
    ppl_a = perplexity(model, ev).perplexity
    result["perplexity"]["autoround_fake_quant_float32"] = ppl_a
    result["evaluation"]["fake_quant_eval_seconds"] = round(time.perf_counter() - t0, 1)
    log.info("(a) AutoRound fake-quant float32 perplexity %.4f", ppl_a)
    del model
    save()

    # (b) quantwise's int4 runtime (torchao int4 CPU kernel) on AutoRound's codes
    runs = [("autoround_quantwise_int4_runtime", WeightOnly(algorithm="rtn", lm_head_bits=None))]
    if not args.skip_float32_activations:
        runs.append(("autoround_quantwise_int4_runtime_float32_activations", WeightOnly(algorithm="rtn", lm_head_bits=None, activations="float32")))
    result["runtime"] = {}
    for key, recipe in runs:
        try:
            model = load_language_model(args.model).model
            for name in layers:
                _release(model.get_submodule(name))  # as quantize_lm leaves them
            model = materialize(model, dict(layers), recipe)
            resolved, note = for_this_machine(recipe)
            t0 = time.perf_counter()
            ppl_b = perplexity(model, ev).perplexity
            result["perplexity"][key] = ppl_b
            result["runtime"][key] = {"recipe": f"WeightOnly(algorithm='rtn', lm_head_bits=None, activations={recipe.activations!r})",
                                      "activations": resolved.activations, "note": note,
                                      "kernel": "torchao PrototypeInt4WeightOnlyConfig (int4 CPU kernel), codes/scales/zeros overwritten with AutoRound's",
                                      "eval_seconds": round(time.perf_counter() - t0, 1)}
            log.info("(b) %s perplexity %.4f (activations %s)", key, ppl_b, resolved.activations)
            del model
        except Exception as err:  # noqa: BLE001
            import traceback

            result["runtime"][key] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            log.error("%s failed: %s", key, err)
        save()

    p = result["perplexity"]
    result["relative_to_float32"] = {k: round(v / p["float32"] - 1, 5) for k, v in p.items() if k != "float32"}
    result["status"] = "ok"
    save()
    log.info("wrote %s: %s", args.json, json.dumps(result["perplexity"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
