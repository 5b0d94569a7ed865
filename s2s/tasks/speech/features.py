"""The audio front end in numpy alone: reading audio (soundfile), resampling (soxr), log-mel
filterbanks (the rfft of Hann-windowed frames, centred and zero-padded as torch.stft pads
them, and a mel matrix), precomputed features (.npy, Sphinx .mfc), deltas and per-utterance
mean and variance normalisation.

No torch here: `s2s.tasks.speech.audio` turns these features into tensors for training and
decoding, and `s2s.exported` computes them for an exported recogniser on a machine without
PyTorch, so both read a file the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from s2s.config import AudioConfig
from s2s.errors import S2SError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MFC_COEFFICIENTS = 13  # Sphinx cepstra: 13 per frame, C0 first
LOG_FLOOR = 1e-10

Filterbank = Callable[[np.ndarray, AudioConfig], np.ndarray]  # samples -> [frames, n_mels]


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
def mel_weights(n_fft: int, sample_rate: int, n_mels: int) -> np.ndarray:
    """[n_fft // 2 + 1, n_mels] float32 triangular filters, equally spaced in mel, peak 1.

    Adjacent filters cross at 0.5, so a pure tone excites most the filter whose centre is
    nearest to it."""
    points = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    low, centre, high = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - low) / np.maximum(centre - low, 1e-9)
    falling = (high - bins[None, :]) / np.maximum(high - centre, 1e-9)
    weights = np.clip(np.minimum(rising, falling), 0.0, None)
    return weights.T.astype(np.float32)


def frame_sizes(audio: AudioConfig) -> tuple[int, int, int]:
    """Window and hop in samples, and the FFT size (the window rounded up to a power of 2)."""
    rate = audio.sample_rate
    window = max(1, round(rate * audio.frame_ms / 1000))
    hop = max(1, round(rate * audio.hop_ms / 1000))
    return window, hop, 1 << math.ceil(math.log2(window))


def hann(window: int) -> np.ndarray:
    """The periodic Hann window of torch.hann_window (0.5 - 0.5 cos(2 pi n / N))."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(window) / window)).astype(np.float32)


def power_spectrum(samples: np.ndarray, audio: AudioConfig) -> np.ndarray:
    """|STFT|^2 [frames, n_fft // 2 + 1] as torch.stft(center=True, pad_mode="constant")
    frames it: the signal zero-padded by n_fft / 2 each side, the window centred in n_fft."""
    window, hop, n_fft = frame_sizes(audio)
    padded = np.pad(samples.astype(np.float32), n_fft // 2)
    frames = 1 + (padded.size - n_fft) // hop
    start = (n_fft - window) // 2
    windowed = np.zeros(n_fft, dtype=np.float32)
    windowed[start : start + window] = hann(window)
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * windowed, axis=1)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32)


def fbank_features(samples: np.ndarray, audio: AudioConfig) -> np.ndarray:
    """Log-mel filterbank energies [frames, n_mels] float32 of one utterance."""
    _, _, n_fft = frame_sizes(audio)
    power = power_spectrum(samples, audio)
    energies = power @ mel_weights(n_fft, audio.sample_rate, audio.n_mels)
    return np.log(np.maximum(energies, np.float32(LOG_FLOOR)))


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


def delta_features(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ±``width`` frames (edges repeated), as HTK and Sphinx compute."""
    frames = features.shape[0]
    padded = np.concatenate(
        [np.repeat(features[:1], width, 0), features, np.repeat(features[-1:], width, 0)]
    )
    total = np.zeros_like(features)
    for n in range(1, width + 1):
        total += n * (
            padded[width + n : width + n + frames] - padded[width - n : width - n + frames]
        )
    return total / np.float32(2 * sum(n * n for n in range(1, width + 1)))


def normalized(features: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per feature over the utterance (channel normalisation)."""
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    return (features - mean) / (std + np.float32(1e-5))


def raw_feature_array(
    path: Path, audio: AudioConfig, filterbank: Filterbank | None = None
) -> np.ndarray:
    """Features as the recipe asks for them, before deltas and normalisation; audio goes
    through ``filterbank`` (default `fbank_features`; the torch path passes torch.stft's)."""
    suffix = path.suffix.lower()
    if audio.features == "precomputed":
        if suffix == ".mfc":
            return read_mfc(path)
        if suffix == ".npy":
            return read_npy(path)
        raise S2SError(f"{path}: audio.features = 'precomputed' reads .npy or .mfc files")
    if suffix in (".mfc", ".npy"):
        raise S2SError(f"{path}: a feature file, but audio.features = 'fbank' wants audio")
    if not path.is_file():
        raise S2SError(f"{path}: audio file not found")
    return (filterbank or fbank_features)(read_audio(path, audio.sample_rate), audio)


def feature_array(path: Path, audio: AudioConfig) -> np.ndarray:
    """[frames, width] float32 features of one file: raw, deltas, normalisation."""
    if not path.is_file():
        raise S2SError(f"{path}: file not found")
    features = raw_feature_array(path, audio)
    if not np.isfinite(features).all():
        raise S2SError(f"{path}: features hold NaN or infinite values")
    parts = [features]
    for _ in range(audio.deltas):
        parts.append(delta_features(parts[-1]))
    features = np.concatenate(parts, axis=1)
    return normalized(features) if audio.normalize else features
