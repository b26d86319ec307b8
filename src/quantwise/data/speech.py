"""Mel spectrograms of synthetic speech for speaker encoders, from a committed asset file.

``scripts/make_speech_features.py`` renders gensim news sentences with espeak-ng in several
voices and stores whole-utterance Resemblyzer mels (float16) plus the start frame of every
1.6 s partial. Loading needs only safetensors, so neither espeak-ng nor librosa is required
at run time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors import safe_open

ASSET = Path(__file__).resolve().parents[1] / "models" / "assets" / "speech_mels.safetensors"
PARTIAL_FRAMES = 160


@dataclass(frozen=True)
class SpeechPartials:
    """Every 1.6 s partial of every utterance, with who said what."""

    mels: torch.Tensor  # (P, 160, 40) float32 power mel frames
    utterance: torch.Tensor  # (P,) utterance index of each partial
    voice: torch.Tensor  # (U,) voice index of each utterance
    sentence: torch.Tensor  # (U,) sentence index of each utterance
    voices: tuple[str, ...]
    sentences: tuple[str, ...]
    source: str


@cache
def load_speech(path: Path = ASSET) -> SpeechPartials:
    """Read the asset and cut the partials (each one a (160, 40) window of its utterance)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run scripts/make_speech_features.py")
    with safe_open(str(path), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    index = t["partial_start"][:, None] + torch.arange(PARTIAL_FRAMES)
    return SpeechPartials(
        mels=t["mels"][index].float(),
        utterance=t["partial_utt"],
        voice=t["utt_voice"],
        sentence=t["utt_sentence"],
        voices=tuple(json.loads(meta["voices"])),
        sentences=tuple(json.loads(meta["sentences"])),
        source=meta.get("source", ""),
    )
