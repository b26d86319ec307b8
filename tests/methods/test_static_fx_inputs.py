"""The fx path refuses models with integer inputs in one line; pt2e quantizes the same model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from quantwise.config import QAT, StaticInt8
from quantwise.errors import QuantwiseError
from quantwise.methods import static_fx
from quantwise.methods.static_pt2e import _prepare, quantized_fraction


class MaskedEncoder(nn.Module):
    """Token ids and an int64 attention mask, as minilm-l6 takes them."""

    def __init__(self):
        super().__init__()
        self.embed, self.proj = nn.Embedding(50, 16), nn.Linear(16, 16)

    def forward(self, ids, mask):
        x = self.proj(self.embed(ids)) * mask.unsqueeze(-1)
        return x.sum(1) / mask.sum(1, keepdim=True)


def _inputs():
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("recipe", [StaticInt8(path="fx"), QAT()])
def test_fx_refuses_integer_inputs_naming_the_paths_that_work(recipe):
    with pytest.raises(QuantwiseError) as err:
        static_fx.prepare(MaskedEncoder().eval(), recipe, _inputs())
    assert "input 0 is int64" in str(err.value) and "path=pt2e" in err.value.fix


def test_pt2e_quantizes_the_same_model():
    prepared = _prepare(MaskedEncoder().eval(), StaticInt8(path="pt2e"), _inputs(), dynamic=True)
    assert quantized_fraction(prepared) == (1, 1)


def test_xnnpack_on_minilm_quantizes_saves_and_warns_that_it_loses_accuracy(capsys, tmp_path):
    """XNNPACK's quantizer observes a constant of the attention as an activation: it used to crash
    saving ('list assignment index out of range'); the model it gives is far from float, and
    quantize says so instead of reporting success."""
    from tests.helpers import invoke

    code, out, _ = invoke(capsys, "quantize", "minilm-l6", "--recipe", "static-xnnpack", "--n-calibration", "8", "--n-evaluation", "16",
                          "--out", str(tmp_path / "m"))
    assert code == 0 and (tmp_path / "m" / "manifest.json").is_file()
    assert "warning: cosine" in " ".join(out.split()) and "more than this model's tolerance" in " ".join(out.split())
