#!/usr/bin/env python
"""Render English sentences with espeak-ng in several voices and store Resemblyzer mel spectrograms.

Run once, offline, by a developer; the output file is committed so that loading the
"resemblyzer-lstm" zoo model needs neither espeak-ng nor librosa:

    apt-get install -y espeak-ng
    PYTHONPATH=src .venv/bin/python scripts/make_speech_features.py

Why each step looks the way it does:
- Resemblyzer's own preprocessing (``resemblyzer.audio``) needs librosa and webrtcvad, which
  are not installed here, so the mel spectrogram is recomputed with numpy/scipy to match
  ``librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40)`` (librosa
  0.11 defaults: centred frames, zero padding, periodic Hann window, power 2, Slaney mel
  filters). It was checked against librosa 0.11 in a throwaway venv (max error 1e-7 of the peak).
- webrtcvad's silence trimming is replaced by an energy detector with Resemblyzer's window
  (30 ms), smoothing (8 windows) and dilation (6 windows). Synthetic speech has no background
  noise, so a fixed energy threshold (-55 dBFS) finds its pauses reliably.
- Whole-utterance mels are stored (float16) together with the start frame of every 1.6 s
  partial chosen exactly like ``VoiceEncoder.compute_partial_slices(rate=1.3,
  min_coverage=0.75)``; the waveform is zero-padded to cover the last partial first, as
  ``VoiceEncoder.embed_utterance`` does. Storing utterances rather than the overlapping partials
  makes the file a third smaller (3.6 MB).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.ndimage import binary_dilation
from scipy.signal import get_window, resample_poly

log = logging.getLogger("make_speech_features")

# "Speakers": espeak-ng voice variants (pitch, formants, breathiness) with British and US accents.
# The plain language voices (en, en-us, de, fr, ...) share one default speaker and are hard to
# tell apart (cosine 0.85-0.89 between them vs 0.89-0.93 within one), so variants are used.
VOICES = ["en+m3", "en-us+m1", "en+m7", "en+klatt", "en+f1", "en-us+f2", "en+f3", "en+grandma"]
N_SENTENCES = 20
SAMPLING_RATE = 16000
N_FFT = int(SAMPLING_RATE * 25 / 1000)  # 25 ms window
HOP = int(SAMPLING_RATE * 10 / 1000)  # 10 ms step
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE = 1.3
MIN_COVERAGE = 0.75
NORM_TARGET_DBFS = -30.0
VAD_WINDOW = SAMPLING_RATE * 30 // 1000
VAD_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE = 6
VAD_THRESHOLD_DBFS = -55.0
INT16_MAX = 2**15 - 1

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/quantwise/models/assets/speech_mels.safetensors"


def pick_sentences(n: int) -> list[str]:
    """One 6-10 word sentence (letters and simple punctuation only) from each of the first documents
    of gensim's lee_background.cor that have one, ``n`` in all."""
    from quantwise.data.gensim_text import gensim_test_file, split_sentences

    chosen: list[str] = []
    for doc in gensim_test_file("lee_background.cor").read_text(encoding="cp1252").splitlines():
        for sentence in split_sentences(doc):
            words = sentence.split()
            if 6 <= len(words) <= 10 and re.fullmatch(r"[A-Za-z ,.'\-]+", sentence):
                chosen.append(sentence)
                break
        if len(chosen) == n:
            return chosen
    raise RuntimeError(f"found only {len(chosen)} suitable sentences")


def render(voice: str, text: str) -> np.ndarray:
    """espeak-ng speech as float32 at 16 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        rate, pcm = wavfile.read(path)
    wav = pcm.astype(np.float32) / 32768.0
    if rate != SAMPLING_RATE:
        g = np.gcd(rate, SAMPLING_RATE)
        wav = resample_poly(wav, SAMPLING_RATE // g, rate // g).astype(np.float32)
    return wav


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """resemblyzer.audio.normalize_volume(wav, -30, increase_only=True)."""
    rms = np.sqrt(np.mean((wav * INT16_MAX) ** 2))
    change = NORM_TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else wav * (10 ** (change / 20))


def trim_long_silences(wav: np.ndarray) -> np.ndarray:
    """resemblyzer.audio.trim_long_silences with an energy detector in place of webrtcvad."""
    wav = wav[: len(wav) - len(wav) % VAD_WINDOW]
    windows = wav.reshape(-1, VAD_WINDOW)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) + 1e-12)
    flags = (rms_dbfs > VAD_THRESHOLD_DBFS).astype(float)
    width = VAD_AVERAGE_WIDTH
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    summed = np.cumsum(padded)
    summed[width:] = summed[width:] - summed[:-width]
    mask = np.round(summed[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(VAD_MAX_SILENCE + 1))
    return wav[np.repeat(mask, VAD_WINDOW)]


def partial_starts(n_samples: int) -> tuple[list[int], int]:
    """Start frames of the partials and the padded waveform length (VoiceEncoder.compute_partial_slices)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round((SAMPLING_RATE / PARTIAL_RATE) / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts, (starts[-1] + PARTIAL_FRAMES) * HOP


def mel_filterbank() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney mel scale, area-normalised."""
    f_sp, min_log_hz, min_log_mel, log_step = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return hz / f_sp if hz < min_log_hz else min_log_mel + np.log(hz / min_log_hz) / log_step

    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLING_RATE / 2), N_MELS + 2)
    mel_f = np.where(mels < min_log_mel, f_sp * mels, min_log_hz * np.exp(log_step * (mels - min_log_mel)))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - np.fft.rfftfreq(N_FFT, 1.0 / SAMPLING_RATE)[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]).astype(np.float32)


def wav_to_mel(wav: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram, as resemblyzer.audio.wav_to_mel_spectrogram."""
    padded = np.pad(wav, N_FFT // 2)
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * get_window("hann", N_FFT, fftbins=True), axis=1)
    return (np.abs(spectrum) ** 2 @ mel_filterbank().T).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--voices", default=",".join(VOICES), help="comma-separated espeak-ng voices")
    parser.add_argument("--n-sentences", type=int, default=N_SENTENCES)
    args = parser.parse_args()
    import torch  # imported here so the signal helpers above work without torch
    from safetensors.torch import save_file

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    voices = args.voices.split(",")
    sentences = pick_sentences(args.n_sentences)
    mels: list[np.ndarray] = []
    utt_voice, utt_sentence, utt_offset, partial_utt, partial_start = [], [], [], [], []
    offset = 0
    for v, voice in enumerate(voices):
        for s, text in enumerate(sentences):
            wav = trim_long_silences(normalize_volume(render(voice, text)))
            starts, padded_len = partial_starts(len(wav))
            mel = wav_to_mel(np.pad(wav, (0, max(0, padded_len - len(wav)))))
            mel = mel[: starts[-1] + PARTIAL_FRAMES]
            u = len(utt_voice)
            utt_voice.append(v)
            utt_sentence.append(s)
            utt_offset.append(offset)
            partial_utt += [u] * len(starts)
            partial_start += [offset + st for st in starts]
            mels.append(mel)
            offset += len(mel)
        log.info("voice %-16s done, %d frames so far", voice, offset)

    tensors = {
        "mels": torch.from_numpy(np.concatenate(mels)).to(torch.float16),
        "utt_voice": torch.tensor(utt_voice),
        "utt_sentence": torch.tensor(utt_sentence),
        "utt_offset": torch.tensor(utt_offset),
        "partial_utt": torch.tensor(partial_utt),
        "partial_start": torch.tensor(partial_start),
    }
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    version = version.split(" Data at")[0].strip()  # drop the local data path
    metadata = {
        "voices": json.dumps(voices),
        "sentences": json.dumps(sentences),
        "source": f"{version}; sentences from gensim test_data/lee_background.cor",
        "mel": json.dumps(
            {"sr": SAMPLING_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "partial_frames": PARTIAL_FRAMES,
             "rate": PARTIAL_RATE, "min_coverage": MIN_COVERAGE}
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors creates files readable by the owner only
    tmp.replace(args.out)
    size_mb = args.out.stat().st_size / 1e6
    log.info("%d utterances, %d partials -> %s (%.2f MB)", len(utt_voice), len(partial_utt), args.out, size_mb)


if __name__ == "__main__":
    main()
