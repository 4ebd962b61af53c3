"""Several XTTS chunks decoded together: one GPT pass per step over all rows, then the vocoder.

XTTS's own ``inference`` decodes one chunk through Hugging Face ``generate``, which shares one
set of sampling parameters and torch's global random state across its batch. Here each row
keeps its own conditioning latents, text, sampling parameters, ``torch.Generator`` and stop
check, and the rows share the GPT's forward passes:

- every row's prefix (voice latents, then its text tokens, then the start-of-audio token) is
  left-padded to the longest one, with an attention mask, so the KV cache covers the batch;
  GPT-2's own position embeddings are null in XTTS and the audio positions advance together,
  so padding changes no row's arithmetic beyond float rounding;
- the logits are processed as ``generate`` does (repetition penalty over the row's own ids,
  temperature, top-k, top-p) and sampled with the row's generator, so a seeded row speaks the
  same take as the same chunk decoded alone;
- a row leaves the batch at the stop token, at the length bound, or when its caller stops it;
  the others continue;
- the audio latents come from XTTS's own GPT forward over each row's codes; on CUDA the
  vocoder runs once per group of rows whose latents have the same length (padding would change
  the edges of the shorter ones), on the CPU once per row (compute-bound: a batch is slower per
  row), and each row is handed back as soon as its audio is made.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InvalidInput
from core.xtts.latents import Conditioning
from core.xtts.profiles import SynthesisParams

_BYTES_PER_VALUE = 4  # float32 activations and cache
_VOCODER_VALUES_PER_SAMPLE = 64  # HiFi-GAN's widest activations, summed over the tensors alive at once


@dataclass
class Row:
    """One chunk to speak: its text tokens, voice, sampling parameters, seed and stop check."""

    text_tokens: torch.Tensor  # (1, T) int
    conditioning: Conditioning
    params: SynthesisParams
    seed: int | None = None  # this chunk's own seed (see core.device.chunk_seed); None: a random one
    should_stop: Callable[[], bool] | None = None


@dataclass
class RowResult:
    """A row's audio codes and waveform; ``stopped``: its caller stopped it (no audio)."""

    codes: torch.Tensor | None
    wav: np.ndarray | None
    stopped: bool = False


@dataclass
class BatchTimes:
    """Where a batch's time went, in seconds (for the benchmark and the logs)."""

    gpt_s: float = 0.0
    vocoder_s: float = 0.0
    rows: int = 0
    steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def tokenize(model: Any, text: str, language: str) -> torch.Tensor:
    """Text tokens as XTTS's ``inference`` makes them (lower case, language without country)."""
    lang = language.split("-")[0]
    tokens = torch.IntTensor(model.tokenizer.encode(text.strip().lower(), lang=lang)).unsqueeze(0)
    if tokens.shape[-1] >= model.args.gpt_max_text_tokens:
        raise InvalidInput(
            f"This chunk is {tokens.shape[-1]} text tokens; XTTS takes fewer than {model.args.gpt_max_text_tokens}. "
            "Lower the chunk size."
        )
    return tokens


def row_bytes(model_args: Any) -> int:
    """Device memory one row may need at most: its KV cache at full length plus the vocoder's activations."""
    seq = 32 + model_args.gpt_max_text_tokens + 2 + model_args.gpt_max_audio_tokens + 3
    kv_cache = 2 * model_args.gpt_layers * model_args.gpt_n_model_channels * seq * _BYTES_PER_VALUE
    samples = model_args.gpt_max_audio_tokens * model_args.gpt_code_stride_len
    return kv_cache + samples * _VOCODER_VALUES_PER_SAMPLE * _BYTES_PER_VALUE


def _prefix(gpt: Any, row: Row, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The row's embedded prefix plus start-of-audio token, and the ids ``generate`` would see."""
    text = row.text_tokens.to(device)
    text = F.pad(text, (0, 1), value=gpt.stop_text_token)
    text = F.pad(text, (1, 0), value=gpt.start_text_token)
    emb = gpt.text_embedding(text) + gpt.text_pos_embedding(text)
    emb = torch.cat([row.conditioning.gpt_cond_latent.to(device), emb], dim=1)
    start = torch.full((1, 1), gpt.start_audio_token, dtype=torch.long, device=device)
    start_emb = gpt.mel_embedding(start) + gpt.mel_pos_embedding(start)
    ids = torch.ones(emb.shape[1] + 1, dtype=torch.long, device=device)
    ids[-1] = gpt.start_audio_token
    return torch.cat([emb, start_emb], dim=1)[0], ids


@dataclass(frozen=True)
class _Sampling:
    """The active rows' sampling parameters as (rows, 1) columns on the device."""

    penalty: torch.Tensor
    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor

    @classmethod
    def of(cls, params: Sequence[SynthesisParams], device: torch.device, vocab: int) -> _Sampling:
        def column(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)[:, None]

        return cls(
            column([p.repetition_penalty for p in params]),
            column([p.temperature for p in params]),
            column([min(max(int(p.top_k), 1), vocab) for p in params], torch.long),
            column([p.top_p for p in params]),
        )

    def select(self, index: torch.Tensor) -> _Sampling:
        return _Sampling(*(t.index_select(0, index) for t in (self.penalty, self.temperature, self.top_k, self.top_p)))


def _processed(scores: torch.Tensor, ids: torch.Tensor, sampling: _Sampling) -> torch.Tensor:
    """Scores after repetition penalty, temperature, top-k and top-p, row by row as ``generate`` does."""
    seen = torch.gather(scores, 1, ids)
    seen = torch.where(seen < 0, seen * sampling.penalty, seen / sampling.penalty)
    scores = scores.scatter(1, ids, seen)
    scores = scores / sampling.temperature
    kth = torch.sort(scores, dim=-1, descending=True).values.gather(1, sampling.top_k - 1)
    scores = scores.masked_fill(scores < kth, -float("inf"))
    ordered, order = torch.sort(scores, descending=False)
    remove = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - sampling.top_p)
    remove[..., -1:] = False
    remove = remove.scatter(1, order, remove)
    return scores.masked_fill(remove, -float("inf"))


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    """The row's own random source on ``device``; torch's global state is never touched."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def decode_codes(model: Any, rows: Sequence[Row], times: BatchTimes | None = None) -> list[torch.Tensor | None]:
    """Audio codes for each row (with the stop token when it was sampled); ``None`` for a stopped row.

    One host sync per step (the sampled tokens, to test for the stop token); each row samples
    from its own generator.
    """
    from transformers import DynamicCache

    gpt = model.gpt
    device = next(gpt.parameters()).device
    prefixes = [_prefix(gpt, row, device) for row in rows]
    longest = max(p[0].shape[0] for p in prefixes)
    emb = torch.zeros(len(rows), longest, prefixes[0][0].shape[-1], device=device, dtype=prefixes[0][0].dtype)
    mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
    history = torch.full((len(rows), longest), gpt.start_audio_token, dtype=torch.long, device=device)
    for r, (row_emb, ids) in enumerate(prefixes):  # left-padded; the ids' padding repeats an id the row has
        emb[r, longest - row_emb.shape[0] :] = row_emb
        mask[r, longest - row_emb.shape[0] :] = 1
        history[r, longest - ids.shape[0] :] = ids
    sampling = _Sampling.of([row.params for row in rows], device, gpt.mel_head.out_features)
    generators = [_generator(row.seed, device) for row in rows]
    generated: list[list[int]] = [[] for _ in rows]
    results: list[torch.Tensor | None] = [None] * len(rows)
    active = list(range(len(rows)))  # the rows still decoding, in batch order
    cache = DynamicCache()
    step = 0
    while active:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -emb.shape[1] :]
        out = gpt.gpt(
            inputs_embeds=emb, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        cache = out.past_key_values
        logits = gpt.mel_head(gpt.final_norm(out.last_hidden_state[:, -1:, :]))[:, -1, :].float()
        probs = _processed(logits, history, sampling).softmax(dim=-1)
        step += 1
        going = [s for s, r in enumerate(active) if rows[r].should_stop is None or not rows[r].should_stop()]
        drawn = [torch.multinomial(probs[s : s + 1], 1, generator=generators[active[s]]) for s in going]
        tokens = torch.cat(drawn).view(-1).tolist() if drawn else []
        keep: list[int] = []
        following: list[int] = []
        for s, token in zip(going, tokens, strict=True):
            r = active[s]
            generated[r].append(token)
            if token == gpt.stop_audio_token or step >= gpt.max_gen_mel_tokens:
                results[r] = torch.tensor([generated[r]], dtype=torch.long, device=device)
            else:
                keep.append(s)
                following.append(token)
        if not keep:
            break
        if len(keep) < len(active):  # finished and stopped rows leave the batch
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, history, sampling = (
                mask.index_select(0, index),
                history.index_select(0, index),
                sampling.select(index),
            )
            active = [active[s] for s in keep]
        column = torch.tensor(following, dtype=torch.long, device=device)[:, None]
        history = torch.cat([history, column], dim=1)
        mask = torch.cat([mask, torch.ones_like(column)], dim=1)
        emb = gpt.mel_embedding(column) + gpt.mel_pos_embedding.get_fixed_embedding(step, device)
    if times is not None:
        times.steps += step
    return results


@torch.inference_mode()
def audio_latents(model: Any, row: Row, codes: torch.Tensor) -> torch.Tensor:
    """The GPT's audio latents for ``codes``, as XTTS's ``inference`` computes them (and its speed stretch)."""
    device = codes.device
    text = row.text_tokens.to(device)
    latents = model.gpt(
        text,
        torch.tensor([text.shape[-1]], device=device),
        codes,
        torch.tensor([codes.shape[-1] * model.gpt.code_stride_len], device=device),
        cond_latents=row.conditioning.gpt_cond_latent.to(device),
        return_attentions=False,
        return_latent=True,
    )
    length_scale = 1.0 / max(row.params.speed, 0.05)
    if length_scale != 1.0:
        latents = F.interpolate(latents.transpose(1, 2), scale_factor=length_scale, mode="linear").transpose(1, 2)
    return latents


def vocoder_groups(latents: Sequence[torch.Tensor], *, batched: bool) -> list[list[int]]:
    """Which rows share a vocoder pass: ``batched`` (on CUDA), those whose latents have one length;
    otherwise (on the CPU, where HiFi-GAN is compute-bound and a batch runs slower per row) each alone."""
    if not batched:
        return [[index] for index in range(len(latents))]
    groups: dict[int, list[int]] = {}
    for index, lat in enumerate(latents):
        groups.setdefault(lat.shape[1], []).append(index)
    return list(groups.values())


@torch.inference_mode()
def vocode(model: Any, latents: Sequence[torch.Tensor], embeddings: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Waveforms for rows whose latents have one length, in one HiFi-GAN pass."""
    device = latents[0].device
    g = torch.cat([e.to(device) for e in embeddings], dim=0)
    out = model.hifigan_decoder(torch.cat(list(latents), dim=0), g=g).cpu().reshape(len(latents), -1)
    return [wav.numpy().astype(np.float32) for wav in out]


Deliver = Callable[[int, RowResult], None]


@torch.inference_mode()
def synthesize_rows(
    model: Any, rows: Sequence[Row], times: BatchTimes | None = None, deliver: Deliver | None = None
) -> list[RowResult]:
    """Decode ``rows`` together and vocode them; a row whose caller stopped it has no audio.

    ``deliver(index, result)`` hears each row as soon as it is done (a stopped row after the
    decoding, a spoken one after its vocoder pass), so a caller need not wait for the others'.
    """
    started = time.perf_counter()
    codes = decode_codes(model, rows, times)
    results = [RowResult(None, None, stopped=True) for _ in rows]
    spoken = [i for i, c in enumerate(codes) if c is not None]
    for index in set(range(len(rows))) - set(spoken):
        if deliver is not None:
            deliver(index, results[index])
    latents = [audio_latents(model, rows[i], codes[i]) for i in spoken]  # type: ignore[arg-type]
    gpt_done = time.perf_counter()
    for group in vocoder_groups(latents, batched=bool(latents) and latents[0].device.type == "cuda"):
        members = [spoken[g] for g in group]
        embeddings = [rows[i].conditioning.speaker_embedding for i in members]
        for index, wav in zip(members, vocode(model, [latents[g] for g in group], embeddings), strict=True):
            results[index] = RowResult(codes[index].cpu(), wav)  # type: ignore[union-attr]
            if deliver is not None:
                deliver(index, results[index])
    if times is not None:
        times.gpt_s += gpt_done - started
        times.vocoder_s += time.perf_counter() - gpt_done
        times.rows += len(rows)
    return results
