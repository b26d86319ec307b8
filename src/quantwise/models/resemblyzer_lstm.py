"""Resemblyzer's speaker encoder (3-layer LSTM) on espeak-ng speech in several voices.

The network is rebuilt in plain torch with Resemblyzer's parameter names because importing
``resemblyzer`` pulls in librosa and webrtcvad, which are not installed. The forward pass is
``VoiceEncoder.forward``: the last layer's final hidden state, a Linear+ReLU, L2 norm.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from quantwise.data.base import TensorSet
from quantwise.data.speech import SpeechPartials, load_speech
from quantwise.models.base import ModelBundle, zoo_bundle
from quantwise.models.zoo import DESCRIPTIONS


NAME = "resemblyzer-lstm"
DESCRIPTION = DESCRIPTIONS[NAME]
N_CALIBRATION_SENTENCES = 8  # sentences 0-7 calibrate, the rest evaluate
DEFAULT_CALIBRATION = 128


class SpeakerEncoder(nn.Module):
    """``resemblyzer.VoiceEncoder`` without its device handling and audio preprocessing."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, frames, 40) mel frames -> (B, 256) unit-norm, non-negative speaker embedding."""
        _, (hidden, _) = self.lstm(mels)
        embeds = self.relu(self.linear(hidden[-1]))
        return F.normalize(embeds, dim=1)


def weights_path() -> Path:
    """``resemblyzer/pretrained.pt``, located without importing resemblyzer."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("resemblyzer is not installed (pip install --no-deps resemblyzer==0.1.4)")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def build() -> SpeakerEncoder:
    """The encoder with the pretrained weights, in eval mode."""
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    model = SpeakerEncoder()
    model.load_state_dict(state)  # strict: every parameter must come from the checkpoint
    return model.eval()


@torch.no_grad()
def utterance_embeddings(
    model: nn.Module, speech: SpeechPartials, partials: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each utterance's partial embeddings, renormalised (``VoiceEncoder.embed_utterance``)."""
    embeds = torch.cat([model(speech.mels[part]).float() for part in partials.split(256)])
    utts, inverse = speech.utterance[partials].unique(return_inverse=True)
    sums = torch.zeros(len(utts), embeds.shape[1]).index_add_(0, inverse, embeds)
    return utts, F.normalize(sums, dim=1)


def speaker_scores(model: nn.Module, speech: SpeechPartials, partials: torch.Tensor) -> dict[str, float]:
    """Equal error rate of same-voice vs other-voice trials between utterances of different sentences.

    Pairs that share a sentence are left out, so the text cannot help tell voices apart.
    """
    from sklearn.metrics import roc_curve

    utts, emb = utterance_embeddings(model, speech, partials)
    voice, sentence = speech.voice[utts], speech.sentence[utts]
    i, j = torch.triu_indices(len(utts), len(utts), offset=1)
    keep = sentence[i] != sentence[j]
    i, j = i[keep], j[keep]
    cos = (emb[i] * emb[j]).sum(1).numpy()
    same = (voice[i] == voice[j]).numpy()
    fpr, tpr, _ = roc_curve(same, cos)
    k = int((abs((1 - tpr) - fpr)).argmin())
    return {
        "speaker_eer": float((fpr[k] + 1 - tpr[k]) / 2),
        "same_voice_cos": float(cos[same].mean()),
        "other_voice_cos": float(cos[~same].mean()),
    }


def _shuffled(index: torch.Tensor, seed: int) -> torch.Tensor:
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]


def load(*, n_calibration: int | None = None, n_evaluation: int | None = None) -> ModelBundle:
    """Encoder plus mel partials split by sentence; ``downstream`` gives the speaker EER."""
    speech = load_speech()
    calib_utt = speech.sentence < N_CALIBRATION_SENTENCES
    is_calib = calib_utt[speech.utterance]
    # shuffled (seeded) so that any prefix mixes voices and sentences
    calib_idx = _shuffled(torch.nonzero(is_calib).flatten(), seed=0)
    eval_idx = _shuffled(torch.nonzero(~is_calib).flatten(), seed=1)
    n_cal = DEFAULT_CALIBRATION if n_calibration is None else n_calibration
    n_eval = len(eval_idx) if n_evaluation is None else n_evaluation
    calib_idx, eval_idx_used = calib_idx[:n_cal], eval_idx[:n_eval]
    last = len(speech.sentences) - 1
    what = f"{len(speech.voices)} espeak-ng voices ({', '.join(speech.voices)})"
    calibration = TensorSet(
        (speech.mels[calib_idx],),
        description=f"{len(calib_idx)} mel partials, random, of sentences 0-{N_CALIBRATION_SENTENCES - 1}, {what}",
    )
    evaluation = TensorSet(
        (speech.mels[eval_idx_used],),
        description=f"{len(eval_idx_used)} mel partials, random, of sentences {N_CALIBRATION_SENTENCES}-{last}, {what}",
    )
    return zoo_bundle(
        NAME, build, calibration, evaluation, "partials",
        task="embedding",
        primary="cosine",
        tolerance=0.01,
        downstream=lambda model: speaker_scores(model, speech, eval_idx),
        description=DESCRIPTION + f"; speech: {speech.source}",
    )
