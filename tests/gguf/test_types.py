"""Per-tensor block types: llama.cpp's rule and its fallbacks, on SmolLM2's real shapes."""
import pytest

from quantwise.gguf.types import choose_type

N = 30  # SmolLM2-135M's decoder layers; hidden 576, MLP 1536


def _t(file_type, name, cols, pure=False):
    return choose_type(file_type, name, cols, N, tied=True, pure=pure)


def test_q4_k_m_falls_back_where_rows_do_not_fit_256_and_goes_one_type_up_where_llama_cpp_does():
    q = _t("Q4_K_M", "model.layers.5.self_attn.q_proj", 576)
    assert (q.wanted, q.chosen) == ("Q4_K", "Q5_0") and q.fell_back and "576" in q.reason
    down_plain = _t("Q4_K_M", "model.layers.4.mlp.down_proj", 1536)  # (4 - 30 // 8) % 3 != 2: base type
    assert down_plain.chosen == "Q4_K" and not down_plain.fell_back
    down_up = _t("Q4_K_M", "model.layers.0.mlp.down_proj", 1536)  # first eighth: more bits
    assert down_up.chosen == "Q6_K"
    v_up = _t("Q4_K_M", "model.layers.29.self_attn.v_proj", 576)  # last eighth: Q6_K, which 576 does not fit
    assert (v_up.wanted, v_up.chosen) == ("Q6_K", "Q8_0")
    table = _t("Q4_K_M", "model.embed_tokens", 576)  # tied: the output layer's type, Q8_0 when Q4_K does not fit
    assert table.chosen == "Q8_0"


def test_legacy_types_keep_their_type_and_the_tied_table_goes_up_as_llama_cpp_does():
    assert _t("Q4_0", "model.layers.3.mlp.up_proj", 576).chosen == "Q4_0"
    assert _t("Q4_0", "model.layers.3.mlp.down_proj", 1536).chosen == "Q4_0"
    assert _t("Q4_0", "model.embed_tokens", 576).chosen == "Q8_0"  # Q6_K wanted, 576 % 256 != 0
    assert _t("Q8_0", "model.embed_tokens", 576).chosen == "Q8_0"
    assert _t("Q4_0", "model.layers.3.mlp.up_proj", 576, pure=True).chosen == "Q4_0"
    assert _t("Q4_0", "model.embed_tokens", 576, pure=True).chosen == "Q4_0"


def test_a_row_that_fits_no_block_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="fit"):
        _t("Q4_0", "model.layers.0.mlp.up_proj", 100)
    with pytest.raises(ValueError, match="not a tensor of a Llama-style decoder"):
        _t("Q4_0", "model.layers.0.mlp.weird", 576)


def test_calibrated_q4_0_gives_the_first_ffn_down_layers_q4_1_as_llama_cpp_does_with_an_importance_matrix():
    assert choose_type("Q4_0", "model.layers.2.mlp.down_proj", 1536, N, True, calibrated=True).chosen == "Q4_1"
    assert choose_type("Q4_0", "model.layers.3.mlp.down_proj", 1536, N, True, calibrated=True).chosen == "Q4_0"
    assert choose_type("Q4_0", "model.layers.2.mlp.down_proj", 1536, N, True, calibrated=False).chosen == "Q4_0"
    assert choose_type("Q5_0", "model.layers.0.mlp.down_proj", 1536, N, True, calibrated=True).chosen == "Q5_1"
