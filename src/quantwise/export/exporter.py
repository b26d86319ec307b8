"""``export_artifact``: write the file next to (or away from) the artifact, check parity,
record it in the manifest. A failure at any step leaves nothing behind."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from quantwise import api
from quantwise.artifact import store
from quantwise.errors import QuantwiseError, first_line
from quantwise.export import parity
from quantwise.files import staged_file
from quantwise.built import Built
from quantwise.export.base import recipe_family
from quantwise.export.formats import target_for
from quantwise.export.result import ExportResult, output_path
from quantwise.progress import ProgressFn, no_progress
from quantwise.models.base import ModelBundle
from quantwise.versions import has_vnni


def export_artifact(artifact: str | Path, target_name: str, bundle: ModelBundle | None = None, out: str | Path | None = None,
                    overwrite: bool = False, samples: int | None = None, threads: int | None = None, progress: ProgressFn = no_progress,
                    vnni_only: bool = False) -> ExportResult:
    """Export the quantized model in ``artifact`` to ``target_name`` and prove it.

    ``bundle`` gives the float model and held-out data for the parity check (default: the zoo
    model the artifact names; a user model's bundle must be given, see ``api.load``); ``samples`` held-out inputs (default 256), or for
    a language model evaluation windows of 512 tokens (default 8). ``vnni_only`` keeps ONNX Runtime's
    fast uint8 x int8 layout, which only CPUs with VNNI, AMX or ARM dot products compute correctly
    (default: a file every CPU computes the same, see export/portable.py)."""
    artifact = Path(artifact)
    manifest = store.read_manifest(artifact)
    export = _EXPORTS[api.artifact_kind(manifest)]  # the kind the recipe's method records
    return export(artifact, manifest, target_name, bundle, out, overwrite, samples, threads, progress, vnni_only)


def _export_language_model(artifact: Path, manifest: dict[str, Any], target_name: str, bundle: ModelBundle | None, out: str | Path | None,
                           overwrite: bool, samples: int | None, threads: int | None, progress: ProgressFn, vnni_only: bool) -> ExportResult:
    from quantwise.export.lm_export import export_language_model

    if bundle is not None:
        raise QuantwiseError("--data does not apply to a language-model export", "drop --data: parity is scored on the evaluation articles")
    return export_language_model(artifact, target_name, out, overwrite, windows=8 if samples is None else samples, threads=threads, progress=progress)


def _export_classic(artifact: Path, manifest: dict[str, Any], target_name: str, bundle: ModelBundle | None, out: str | Path | None,
                    overwrite: bool, samples: int | None, threads: int | None, progress: ProgressFn, vnni_only: bool) -> ExportResult:
    if target_name == "gguf":
        raise QuantwiseError("only language models export to GGUF (llama.cpp)", "quantize a language model with a gguf recipe (e.g. gguf-q4_k_m) first")
    target = target_for(target_name)
    samples = 256 if samples is None else samples
    if samples < 1:
        raise QuantwiseError(f"--samples {samples}: the parity check needs at least one held-out sample", "e.g. --samples 256")
    built = Built.from_manifest(manifest)
    family = built.family if built is not None else recipe_family(manifest["recipe"])  # artifacts from before the record
    target.check(family)
    if vnni_only and not has_vnni():
        raise QuantwiseError("--vnni-only: this CPU has no VNNI, AMX or ARM dot product, so it computes such a file wrongly and cannot check it",
                             "export without --vnni-only (the default file computes the same on every CPU)")
    path = output_path(artifact, out, target.name, target.suffix, overwrite)
    if bundle is None:
        bundle = api.bundle_for_artifact(manifest, None)
    loaded = api.load(artifact, arch=api.architecture(bundle))
    held_out = bundle.evaluation.take(samples)
    example = tuple(t.clone() for t in held_out.example(2))  # a view would save the whole split
    with staged_file(path) as tmp:
        start = time.perf_counter()
        try:
            notes = target.write(loaded.module, example, tmp, bool(loaded.quantized.meta.get("dynamic_batch", bundle.dynamic_batch)), bundle.calibration)
            if target.make_portable is not None and not vnni_only:
                notes += target.make_portable(tmp)
            elif target.make_portable is not None:
                notes.append("--vnni-only: uint8 x int8 products kept; correct only on CPUs with VNNI, AMX or ARM dot products "
                             "(AVX2-only x86 saturates them and computes wrong results)")
            runner = target.load(tmp, threads or torch.get_num_threads())
            seconds = time.perf_counter() - start
            result = parity.check(runner, loaded.module, bundle.model.eval(), held_out, bundle.task == "classification")
        except QuantwiseError:
            raise
        except Exception as err:
            raise QuantwiseError(f"{target.name} export of this {family} model failed ({type(err).__name__}: {first_line(err, 160)})",
                                 "try another target (quantwise export --help lists them) or report it") from err
        if not result.passed:
            q = result.vs_quantized
            got = f"agreement {q.agreement:.4f}" if q.agreement is not None else f"cosine {q.cosine:.5f}"
            raise QuantwiseError(f"the {target.name} export does not match the quantized model ({got}; needs {result.tolerance}); nothing was written",
                                 "export with another target, or report this model and recipe")
    export = ExportResult(artifact, target.name, path, path.stat().st_size / 1e6, seconds, result, notes,
                          portable=target.make_portable is None or not vnni_only)
    store.record_export(artifact, target.name, export.to_dict())
    return export


_EXPORTS = {"classic": _export_classic, "language": _export_language_model}
