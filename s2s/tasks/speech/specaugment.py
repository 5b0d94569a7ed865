"""Training-time feature augmentation: SpecAugment's masking (Park et al. 2019) zeroes random
bands of features and random spans of frames in each training utterance, so a small corpus
cannot be memorised frame by frame; tempo perturbation resamples it in time, so the model
hears each utterance at several speaking rates.

Time warping is left out (the paper found it the least useful). Masks are filled with 0,
the mean of normalised features. The trainer applies this to training batches only;
validation, evaluation and transcription read features untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2s.config import AudioConfig

TIME_MASK_SHARE = 0.2  # a time mask covers at most this share of the utterance


def spec_augment(
    features: torch.Tensor, audio: AudioConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A masked copy of [frames, width] ``features``: ``freq_masks`` bands of at most
    ``freq_mask_width`` features and ``time_masks`` spans of at most ``time_mask_width``
    frames (and at most a fifth of the utterance) each."""
    out = features.clone()
    frames, width = out.shape

    def span(limit: int, size: int) -> tuple[int, int]:
        length = int(torch.randint(0, limit + 1, (), generator=generator)) if limit > 0 else 0
        start = int(torch.randint(0, size - length + 1, (), generator=generator))
        return start, length

    for _ in range(audio.freq_masks):
        start, length = span(min(audio.freq_mask_width, width), width)
        out[:, start : start + length] = 0.0
    time_limit = min(audio.time_mask_width, int(frames * TIME_MASK_SHARE))
    for _ in range(audio.time_masks):
        start, length = span(time_limit, frames)
        out[start : start + length] = 0.0
    return out


def tempo_perturb(
    features: torch.Tensor, spread: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``features`` [frames, width] resampled in time by a random rate r in [1 - spread,
    1 + spread]: frames / r frames, linearly interpolated, so the utterance is said faster
    (r > 1) or slower. An approximation of speed perturbation (Ko et al. 2015) that works on
    features of any kind, cepstra included; the spectral envelope is kept. 0: unchanged."""
    if spread == 0:
        return features
    rate = 1 + spread * (2 * float(torch.rand((), generator=generator)) - 1)
    frames = max(round(features.size(0) / rate), 1)
    if frames == features.size(0):
        return features
    stretched = F.interpolate(
        features.t().unsqueeze(0), size=frames, mode="linear", align_corners=True
    )
    return stretched.squeeze(0).t().contiguous()
