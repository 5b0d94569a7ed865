"""The audio front end as tensors: log-mel filterbanks (torch.stft and the mel matrix of
`s2s.tasks.speech.features`), deltas and per-utterance mean and variance normalisation, over
audio and feature files read by `s2s.tasks.speech.features` (numpy, no torch).

`utterance_features` is the one entry point, used alike by training, evaluation and
`s2s transcribe`, so a file gets the same features wherever it comes from. An exported
recogniser computes the same features in numpy (`s2s.tasks.speech.features.feature_array`):
the two FFTs round differently, by at most about 1e-3 after normalisation on FSDD
(tests/test_export_speech.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from s2s.config import AudioConfig
from s2s.errors import S2SError
from s2s.tasks.speech.features import (
    LOG_FLOOR,
    frame_sizes,
    mel_centers,
    mel_weights,
    raw_feature_array,
    read_mfc,
)

__all__ = ["fbank", "input_width", "mel_centers", "read_mfc", "utterance_features"]


def check_speech_extra() -> None:
    """Fail before any work when a library of the `speech` extra is missing."""
    from importlib.util import find_spec

    missing = [name for name in ("soundfile", "soxr", "jiwer") if find_spec(name) is None]
    if missing:
        raise S2SError(f"speech needs {', '.join(missing)}: pip install 's2s[speech]'")


@lru_cache(maxsize=8)
def mel_matrix(n_fft: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """`mel_weights` as a tensor: [n_fft // 2 + 1, n_mels] triangular filters."""
    return torch.from_numpy(mel_weights(n_fft, sample_rate, n_mels))


def fbank(samples: np.ndarray, audio: AudioConfig) -> torch.Tensor:
    """Log-mel filterbank energies [frames, n_mels] of one utterance (Hann window)."""
    window, hop, n_fft = frame_sizes(audio)
    wave = torch.from_numpy(samples)
    spectrum = torch.stft(
        wave,
        n_fft,
        hop_length=hop,
        win_length=window,
        window=torch.hann_window(window),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # n_fft // 2 + 1 x frames
    power = spectrum.abs().pow(2).transpose(0, 1)
    return (power @ mel_matrix(n_fft, audio.sample_rate, audio.n_mels)).clamp(min=LOG_FLOOR).log()


def deltas(features: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas over ±``width`` frames (edges repeated), as HTK and Sphinx compute."""
    frames = features.size(0)
    padded = torch.cat([features[:1].expand(width, -1), features, features[-1:].expand(width, -1)])
    total = torch.zeros_like(features)
    for n in range(1, width + 1):
        total += n * (
            padded[width + n : width + n + frames] - padded[width - n : width - n + frames]
        )
    return total / (2 * sum(n * n for n in range(1, width + 1)))


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit variance per feature over the utterance (channel normalisation)."""
    mean = features.mean(dim=0, keepdim=True)
    std = features.std(dim=0, unbiased=False, keepdim=True)
    return (features - mean) / (std + 1e-5)


def raw_features(path: Path, audio: AudioConfig) -> torch.Tensor:
    """Features as the recipe asks for them, before deltas and normalisation."""
    return torch.from_numpy(raw_feature_array(path, audio, lambda s, a: fbank(s, a).numpy()))


def utterance_features(path: Path, audio: AudioConfig) -> torch.Tensor:
    """[frames, width] float32 features of one file: raw, deltas, normalisation."""
    if not path.is_file():
        raise S2SError(f"{path}: file not found")
    features = raw_features(path, audio)
    if not torch.isfinite(features).all():
        raise S2SError(f"{path}: features hold NaN or infinite values")
    parts = [features]
    for _ in range(audio.deltas):
        parts.append(deltas(parts[-1]))
    features = torch.cat(parts, dim=1)
    return normalize(features) if audio.normalize else features


def input_width(audio: AudioConfig) -> int:
    """Width of `utterance_features`' output (deltas included)."""
    base = audio.n_mels if audio.features == "fbank" else audio.feature_dim
    return base * (audio.deltas + 1)
