"""Upstream's sub-sentence streaming (api_v2 `streaming_mode` 2 and 3), step for step.

Two halves, both fed as the GPT produces tokens:
* `TokenChunker`: when the GPT's tokens become a chunk (`infer_panel_naive` with
  `streaming_mode=True`): every `min_chunk_tokens` tokens (mode 3, "fixed"), or at a point near
  the mute token (mode 2, "split"; the tokens after the split point come again at the start of
  the next chunk, as upstream yields them).
* `StreamDecoder`: one token chunk -> one piece of audio (`TTS.run` + `decode_streaming`): the
  SoVITS prior sees the whole history, only the chunk plus `overlap_tokens` is vocoded, latents
  are cross-faded, pieces are joined by SOLA, the final piece goes out unblended and a sentence
  that ends exactly on a chunk boundary gets the held-back tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .sovits import SovitsModel

ChunkRule = Literal["fixed", "split"]

CHECK_TOKENS = 2  # upstream check_token_num: a split is looked for only this far past the minimum
SPLIT_THRESHOLD = 0.0  # upstream chunk_split_thershold as TTS.run sets it
SOLA_SEARCH_SAMPLES = 320
SHORT_CHUNK_TOKENS = 10  # chunks shorter than this take a longer overlap (upstream's rule)


@dataclass(frozen=True)
class StreamingConfig:
    """api_v2's streaming parameters (and its request defaults): `rule` fixed = streaming_mode 3,
    split = streaming_mode 2. The product's defaults are a voice's (`VoiceParams`)."""

    rule: ChunkRule = "fixed"
    min_chunk_tokens: int = 16
    overlap_tokens: int = 2

    def __post_init__(self) -> None:
        if self.rule not in ("fixed", "split"):
            raise ValueError(f"chunk rule must be 'fixed' or 'split', got {self.rule!r}")
        if self.min_chunk_tokens < 1 or self.overlap_tokens < 1:
            raise ValueError("min_chunk_tokens and overlap_tokens must be >= 1")


class TokenChunker:
    """Cuts a sentence's tokens into chunks exactly where upstream's generator yields them.

    `add` takes each accepted token (EOS excluded) and returns a chunk to vocode now, or None;
    `finish` returns the final chunk (None when the tokens ran out on a chunk boundary).
    `stop_after` is the token count at which the GPT stops without EOS (early stop / hard cap):
    upstream tests the stop before the chunk rule, so that token never closes a non-final chunk.
    """

    def __init__(self, config: StreamingConfig, mute_similarity: Tensor | None, stop_after: int) -> None:
        if config.rule == "split" and mute_similarity is None:
            raise ValueError("the split rule needs the mute-token similarity of every token")
        self.min_chunk = config.min_chunk_tokens
        self.mute_similarity = mute_similarity.float() if config.rule == "split" and mute_similarity is not None else None
        self.stop_after = stop_after
        self.tokens: list[int] = []
        self.counter = 0  # upstream token_counter
        self.start = 0  # upstream curr_ptr (in generated-token coordinates)

    def add(self, token: int) -> list[int] | None:
        self.tokens.append(token)
        self.counter += 1
        if len(self.tokens) >= self.stop_after:
            return None  # this is the last token: finish() yields everything left
        if self.mute_similarity is not None:
            if self.counter < self.min_chunk + CHECK_TOKENS:
                return None
            window = self.tokens[self.start :]
            split = split_point(self.mute_similarity, window)
            if split is None or split + 1 < self.min_chunk:
                return None
            self.counter -= split + 1
            self.start += split + 1
            return window  # all of it: the tokens after the split come again next time
        if self.counter < self.min_chunk:
            return None
        chunk = self.tokens[-self.counter :]
        self.start += self.counter
        self.counter = 0
        return chunk

    def finish(self) -> list[int] | None:
        rest = self.tokens[self.start :]
        return rest or None


def split_point(mute_similarity: Tensor, window: list[int]) -> int | None:
    """Upstream's split search over a window: the index whose token and the next one together are
    most like the mute token (first on ties), or None when no score reaches the threshold."""
    score = mute_similarity[torch.tensor(window, dtype=torch.long)] - SPLIT_THRESHOLD
    score[score < 0] = -1
    score[:-1] = score[:-1] + score[1:]
    best = int(score.argmax())
    return best if float(score[best]) >= 0 else None


def sola_join(previous: Tensor, window: Tensor, overlap: int, search: int = SOLA_SEARCH_SAMPLES) -> Tensor:
    """Upstream's SOLA for a middle chunk: find where `window` (float32) best continues the last
    `overlap` samples of `previous`, cross-fade them (Hann halves) and return the piece to play:
    window[idx:] with its head blended, minus its own last `overlap` samples (held for the next)."""
    tail = previous[-overlap:].float()
    head = window[: overlap + search].float()
    correlation = F.conv1d(head.view(1, 1, -1), tail.view(1, 1, -1)).view(-1)
    energy = F.conv1d(head.view(1, 1, -1) ** 2, torch.ones_like(tail).view(1, 1, -1)).view(-1) + 1e-8
    offset = int((correlation / energy.sqrt()).argmax())
    piece = window[offset:]  # a view: like upstream, the blend is written into `window` itself
    fade = torch.hann_window(overlap * 2, device=piece.device, dtype=piece.dtype)
    piece[:overlap] = fade[:overlap] * piece[:overlap] + fade[overlap:] * tail
    return piece[:-overlap]


def to_int16(audio: Tensor | np.ndarray) -> np.ndarray:
    """Upstream's `audio_postprocess` for one piece: scaled down only if it would clip, then
    x * 32768 truncated to int16 (clipped at 32767, where upstream would wrap around)."""
    samples = audio.detach().float().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio, np.float32)
    samples = samples.reshape(-1)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:
        samples = samples / peak
    return np.clip(samples * 32768.0, -32768, 32767).astype(np.int16)


@dataclass
class _Previous:
    window: Tensor  # the last chunk's audio window (after the short-chunk trim)
    latent: Tensor  # its latent frames, cross-faded into the next chunk's


class StreamDecoder:
    """Token chunks of one sentence -> audio pieces (float32), as `TTS.run` makes them."""

    def __init__(
        self,
        sovits: SovitsModel,
        phones: Tensor,
        ge: Tensor,
        config: StreamingConfig,
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        self.sovits = sovits
        self.phones = phones
        self.ge = ge
        self.config = config
        self.speed = speed
        self.noise_scale = noise_scale
        self.generator = generator
        self.samples_per_token = sovits.samples_per_code / speed  # upstream upsample_rate
        self.overlap_samples = math.ceil(config.overlap_tokens * self.samples_per_token)
        self.history: list[int] = []
        self.previous: _Previous | None = None
        self.encoded_phones: Tensor | None = None  # the same for every chunk: computed once

    def piece(self, tokens: list[int], final: bool) -> Tensor:
        """The audio to play for this chunk (upstream's assembly rules, see module doc)."""
        first = self.previous is None
        n = len(tokens)
        self.history.extend(tokens)
        overlap_tokens = self.config.overlap_tokens
        if not first and n < SHORT_CHUNK_TOKENS:
            overlap_tokens += SHORT_CHUNK_TOKENS - n
        overlap = None
        if self.previous is not None:
            overlap = self.previous.latent[:, :, -overlap_tokens * self.sovits.config.frames_per_code :]
        if self.encoded_phones is None:
            self.encoded_phones = self.sovits.encode_phones(self.phones)
        window, latent = self.sovits.decode_streaming(
            torch.tensor(self.history, dtype=torch.long),
            self.phones,
            self.ge,
            keep_codes=None if first else n + overlap_tokens,
            overlap=overlap,
            speed=self.speed,
            noise_scale=self.noise_scale,
            generator=self.generator,
            encoded_phones=self.encoded_phones,
        )
        if overlap_tokens > self.config.overlap_tokens:
            window = window[-int((self.config.overlap_tokens + n) * self.samples_per_token) :]
        if first:
            played = window if final else window[: -self.overlap_samples]
        elif final:
            played = window  # upstream plays the last chunk as it is: no SOLA, no cross-fade
        else:
            played = sola_join(self.previous.window, window, self.overlap_samples)
        self.previous = _Previous(window=window, latent=latent)
        return played

    def tail(self) -> Tensor | None:
        """The held-back end of the last window, when the tokens ended on a chunk boundary."""
        return None if self.previous is None else self.previous.window[-self.overlap_samples :]
