"""The audio front end: reading audio (soundfile), resampling (soxr), log-mel filterbanks
(torch.stft and a mel matrix), precomputed features (.npy, Sphinx .mfc), deltas and
per-utterance mean and variance normalisation.

`utterance_features` is the one entry point, used alike by training, evaluation and
`s2s transcribe`, so a file gets the same features wherever it comes from.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from s2s.config import AudioConfig
from s2s.errors import S2SError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MFC_COEFFICIENTS = 13  # Sphinx cepstra: 13 per frame, C0 first
LOG_FLOOR = 1e-10


def check_speech_extra() -> None:
    """Fail before any work when a library of the `speech` extra is missing."""
    from importlib.util import find_spec

    missing = [name for name in ("soundfile", "soxr", "jiwer") if find_spec(name) is None]
    if missing:
        raise S2SError(f"speech needs {', '.join(missing)}: pip install 's2s[speech]'")


def _require_speech_libraries():
    try:
        import soundfile
        import soxr
    except ImportError:
        raise S2SError("speech needs soundfile and soxr: pip install 's2s[speech]'") from None
    return soundfile, soxr


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` (resampled when the file differs)."""
    soundfile, soxr = _require_speech_libraries()
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:  # LibsndfileError is a RuntimeError
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise S2SError(f"{path}: cannot read audio: {first}") from None
    samples = data.mean(axis=1)
    if samples.size == 0:
        raise S2SError(f"{path}: the audio file holds no samples")
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_centers(sample_rate: int, n_mels: int) -> np.ndarray:
    """Centre frequency (Hz) of each mel filter, from 0 Hz to Nyquist."""
    points = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    return points[1:-1]


@lru_cache(maxsize=8)
def mel_matrix(n_fft: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters, equally spaced in mel, peak 1.

    Adjacent filters cross at 0.5, so a pure tone excites most the filter whose centre is
    nearest to it."""
    points = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    low, centre, high = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - low) / np.maximum(centre - low, 1e-9)
    falling = (high - bins[None, :]) / np.maximum(high - centre, 1e-9)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    return torch.from_numpy(weights.T.astype(np.float32))


def fbank(samples: np.ndarray, audio: AudioConfig) -> torch.Tensor:
    """Log-mel filterbank energies [frames, n_mels] of one utterance (Hann window)."""
    rate = audio.sample_rate
    window = max(1, round(rate * audio.frame_ms / 1000))
    hop = max(1, round(rate * audio.hop_ms / 1000))
    n_fft = 1 << math.ceil(math.log2(window))
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
    return (power @ mel_matrix(n_fft, rate, audio.n_mels)).clamp(min=LOG_FLOOR).log()


def read_mfc(path: Path) -> np.ndarray:
    """Sphinx cepstra: a big-endian int32 float count, then that many big-endian float32."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise S2SError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(raw) < 4:
        raise S2SError(f"{path}: not a Sphinx .mfc file (shorter than its header)")
    count = int(np.frombuffer(raw[:4], dtype=">i4")[0])
    values = np.frombuffer(raw[4:], dtype=">f4")
    if count != values.size or count % MFC_COEFFICIENTS or count == 0:
        raise S2SError(
            f"{path}: not a Sphinx .mfc file (header says {count} floats, "
            f"the file holds {values.size}; expected a positive multiple of {MFC_COEFFICIENTS})"
        )
    return values.reshape(-1, MFC_COEFFICIENTS).astype(np.float32)


def read_npy(path: Path) -> np.ndarray:
    """A [frames, features] float array saved with numpy.save."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise S2SError(f"{path}: cannot read .npy features: {error}") from None
    if array.ndim != 2 or array.shape[0] == 0 or not np.issubdtype(array.dtype, np.floating):
        raise S2SError(
            f"{path}: expected a non-empty 2-D float array [frames, features], "
            f"got {array.dtype} {array.shape}"
        )
    return array.astype(np.float32)


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
    suffix = path.suffix.lower()
    if audio.features == "precomputed":
        if suffix == ".mfc":
            return torch.from_numpy(read_mfc(path))
        if suffix == ".npy":
            return torch.from_numpy(read_npy(path))
        raise S2SError(f"{path}: audio.features = 'precomputed' reads .npy or .mfc files")
    if suffix in (".mfc", ".npy"):
        raise S2SError(f"{path}: a feature file, but audio.features = 'fbank' wants audio")
    if not path.is_file():
        raise S2SError(f"{path}: audio file not found")
    return fbank(read_audio(path, audio.sample_rate), audio)


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
