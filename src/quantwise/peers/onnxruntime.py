"""ONNX Runtime's own quantizer as a peer: the float model exported once (torch.export-based
exporter, one self-contained file), then ``quant_pre_process`` and ``quantize_static``
(QDQ, per-channel int8 weights, uint8 activations, calibrated on the same calibration
split) or ``quantize_dynamic``."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from quantwise.export.base import input_names
from quantwise.methods.base import dynamic_batch_shapes
from quantwise.models.base import ModelBundle


@dataclass(frozen=True)
class OrtModel:
    name: str  # the row name
    kind: str  # "baseline" (ORT float: a user could deploy that instead) or "peer"
    path: Path


def export_float(bundle: ModelBundle, path: Path) -> Path:
    example = tuple(t.clone() for t in bundle.example_inputs(2))
    logging.getLogger("onnxscript").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(bundle.model.eval(), example, dynamo=True, verbose=False, input_names=input_names(example),
                                    dynamic_shapes=dynamic_batch_shapes(example) if bundle.dynamic_batch else None)
    program.save(str(path), external_data=False)
    return path


def quantize_static(bundle: ModelBundle, float_path: Path, path: Path, batch_size: int = 16) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    names = input_names(bundle.example_inputs(1))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{n: t.numpy() for n, t in zip(names, inputs)} for inputs, _ in bundle.calibration.batches(batch_size)])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    ort_quantize_static(str(_preprocessed(float_path)), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def quantize_dynamic(float_path: Path, path: Path) -> Path:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    # on a dynamo export, quantize_dynamic fails shape inference unless quant_pre_process ran first
    ort_quantize_dynamic(str(_preprocessed(float_path)), str(path), weight_type=QuantType.QInt8)
    return path


def _preprocessed(float_path: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = float_path.with_name(float_path.stem + "-pre.onnx")
    if not pre.exists():
        quant_pre_process(str(float_path), str(pre))
    return pre


PEERS = (
    ("onnxruntime float", "baseline", lambda b, f, d: f),
    ("onnxruntime static int8 (its own quantizer)", "peer", lambda b, f, d: quantize_static(b, f, d / "ort-static.onnx")),
    ("onnxruntime dynamic int8 (its own quantizer)", "peer", lambda b, f, d: quantize_dynamic(f, d / "ort-dynamic.onnx")),
)
