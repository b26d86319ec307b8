"""ONNX Runtime's contrib ops (domain ``com.microsoft``) for onnxscript translations.

The onnx package carries no schema for them, so each is declared here as ONNX Runtime
documents it; ``contrib_op(name)`` returns the onnxscript ``Op`` to call.
"""
from __future__ import annotations

import functools
from typing import Any

DOMAIN = "com.microsoft"

# name -> (inputs as (name, type, optional), outputs, type constraints, int attributes)
_SPECS: dict[str, tuple[list[tuple[str, str, bool]], list[tuple[str, str]], list[tuple[str, list[str]]], list[str]]] = {
    "MatMulIntegerToFloat": (
        [("A", "T1", False), ("B", "T2", False), ("a_scale", "T3", False), ("b_scale", "T3", False),
         ("a_zero_point", "T1", True), ("b_zero_point", "T2", True), ("bias", "T3", True)],
        [("Y", "T3")],
        [("T1", ["tensor(uint8)", "tensor(int8)"]), ("T2", ["tensor(uint8)", "tensor(int8)"]), ("T3", ["tensor(float)"])],
        [],
    ),
    # Y = A @ dequantize(B)^T, B: [N, k_blocks, block_size * bits / 8] codes packed low bits first
    # along K, dequantized block-wise as (code - zero_point) * scale
    "MatMulNBits": (
        [("A", "T1", False), ("B", "T2", False), ("scales", "T1", False), ("zero_points", "T3", True),
         ("g_idx", "T4", True), ("bias", "T1", True)],
        [("Y", "T1")],
        [("T1", ["tensor(float)", "tensor(float16)"]), ("T2", ["tensor(uint8)"]),
         ("T3", ["tensor(uint8)", "tensor(int32)", "tensor(float)", "tensor(float16)"]), ("T4", ["tensor(int32)"])],
        ["K", "N", "bits", "block_size", "accuracy_level"],
    ),
}


@functools.cache
def contrib_op(name: str) -> Any:
    from onnx.defs import OpSchema
    from onnxscript.values import Op, Opset

    inputs, outputs, constraints, attributes = _SPECS[name]
    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    schema = OpSchema(
        name, DOMAIN, 1,
        inputs=[param(n, t, param_option=optional) if opt else param(n, t) for n, t, opt in inputs],
        outputs=[param(n, t) for n, t in outputs],
        type_constraints=[(t, allowed, "") for t, allowed in constraints],
        attributes=[OpSchema.Attribute(a, OpSchema.AttrType.INT, "") for a in attributes],
    )
    return Op(Opset(DOMAIN, 1), name, schema)
