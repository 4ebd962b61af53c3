"""Keep one speaker (or a few, named apart) in a dataset built from recordings with several voices.

Every clip gets a resemblyzer speaker embedding (its encoder weights ship inside the PyPI package,
so this works offline). Clips are clustered by cosine distance with average linkage; the target
speaker is the cluster closest to a reference clip when one is given, else the one with the most
speech. A clip whose partial-window embeddings drift away from its own mean holds two voices and is
dropped before clustering, so it can neither join a speaker nor pull two speakers together.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.device import DeviceScheduler

RATE = 16000
EMBEDDING_SIZE = 256
MIN_VOICED_S = 0.25  # resemblyzer trims silence; less voice than this left means no voice to embed
MIN_PARTIALS = 3  # fewer partial windows than this cannot show a second voice
PARTIAL_RATE = 1.3  # partial windows per second of voice (resemblyzer's default)
MIN_COVERAGE = 0.75  # resemblyzer's default: a last window with less voice than this is dropped
FORWARD_BATCH = 256  # partial windows per encoder call, which bounds its working memory
CACHE_CLIPS = 4096  # analysed clips remembered by content, so a rebuild with other options re-embeds nothing
# Tuned on espeak-ng voices (tests/test_speakers.py, numbers in its docstring) with margin for real speech.
CLUSTER_DISTANCE = 0.25  # cosine distance (average linkage) at which two groups of clips are two speakers
MIN_SIMILARITY = 0.7  # a kept clip's cosine to its speaker's centroid
MAX_DRIFT = 0.13  # see drift()

OTHER_SPEAKER = "other speaker"
TWO_VOICES = "two voices in one clip"


ENCODER = "speaker-encoder"  # the name in the device registry


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder, loaded on first use (once, even when threads race to it).

    With a ``scheduler`` (the studio's), it runs inside the device slot on the device the registry
    names and is registered there, so lending the GPU to training moves it off; without one, on the CPU.
    """

    def __init__(self, scheduler: DeviceScheduler | None = None) -> None:
        self.scheduler = scheduler
        self._encoder: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        if scheduler is not None:
            scheduler.models.register(
                ENCODER, estimate_bytes=self._estimate, offload=self.unload, reload=self.unload, order=15
            )

    def _estimate(self) -> int:
        encoder = self._encoder
        return 0 if encoder is None else sum(t.numel() * t.element_size() for t in encoder.parameters())

    def unload(self) -> None:
        with self._lock:
            if self._encoder is not None:
                self._encoder = None
                if self.scheduler is not None:
                    self.scheduler.models.unloaded(ENCODER)

    def _model(self) -> Any:
        target = self.scheduler.models.target_device() if self.scheduler is not None else "cpu"
        if self._encoder is not None and str(self._encoder.device) != target:
            self.unload()
        with self._lock:
            if self._encoder is None:
                from resemblyzer import VoiceEncoder

                self._encoder = VoiceEncoder(target, verbose=False)
                if self.scheduler is not None:
                    self.scheduler.models.loaded(ENCODER)
            return self._encoder

    def analyse(self, audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalised utterance embedding, partial-window embeddings) of 16 kHz mono audio.

        Silence is trimmed first, as resemblyzer expects; audio with no voice left gets a zero
        embedding and no partials, which is similar to nothing. Results are remembered by content
        and shared, so they are read-only.
        """
        return self.analyse_many([audio16k])[0]

    def analyse_many(self, clips: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`analyse` of each clip, the partial windows of all of them through the encoder together.

        One encoder call over every clip's windows costs about a third of one call per clip on a CPU
        (bench/bench_dataset.py), and the embeddings are the same.
        """
        audio = [np.ascontiguousarray(clip, dtype=np.float32) for clip in clips]
        keys = [hashlib.blake2b(a.tobytes(), digest_size=16).digest() for a in audio]
        found: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        with self._lock:
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[key] = self._cache[key]
        todo = {key: a for key, a in zip(keys, audio, strict=True) if key not in found}
        fresh = self._analyse(list(todo.values()))
        for result in fresh:
            for array in result:
                array.setflags(write=False)
        with self._lock:
            for key, result in zip(todo, fresh, strict=True):
                self._cache[key] = found[key] = result
            while len(self._cache) > CACHE_CLIPS:
                self._cache.popitem(last=False)
        return [found[key] for key in keys]

    def _analyse(self, clips: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        from resemblyzer import VoiceEncoder, preprocess_wav
        from resemblyzer.audio import wav_to_mel_spectrogram

        silent = np.zeros(EMBEDDING_SIZE, dtype=np.float32), np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        windows: list[np.ndarray] = []  # every clip's partial windows (mel frames), in order
        counts: list[int] = []  # how many windows each clip has; 0: no voice
        for audio in clips:
            # digital silence: resemblyzer's loudness normalisation would divide by zero. No source_sr:
            # the audio is at resemblyzer's rate already, and passing it resamples 16 kHz to 16 kHz
            wav = preprocess_wav(audio) if np.any(audio) else audio[:0]
            if len(wav) < MIN_VOICED_S * RATE:
                counts.append(0)
                continue
            wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(len(wav), PARTIAL_RATE, MIN_COVERAGE)
            wav = np.pad(wav, (0, max(0, wav_slices[-1].stop - len(wav))))
            mel = wav_to_mel_spectrogram(wav)
            windows += [mel[s] for s in mel_slices]
            counts.append(len(mel_slices))
        partials = self._forward(np.stack(windows)) if windows else np.zeros((0, EMBEDDING_SIZE), np.float32)
        results, at = [], 0
        for count in counts:
            ours, at = partials[at : at + count], at + count
            embedding = ours.mean(axis=0) if count else silent[0]
            norm = float(np.linalg.norm(embedding))
            if not count or not np.isfinite(norm) or norm == 0:
                results.append((silent[0].copy(), silent[1].copy()))
            else:
                results.append(((embedding / norm).astype(np.float32), np.array(ours, dtype=np.float32)))
        return results

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """Partial-window embeddings (L2-normalised rows) of mel windows, in bounded batches."""
        import torch

        out = []
        with self.scheduler.slot(ENCODER) if self.scheduler is not None else contextlib.nullcontext():
            encoder = self._model()
            with torch.no_grad():
                for start in range(0, len(windows), FORWARD_BATCH):
                    batch = torch.from_numpy(windows[start : start + FORWARD_BATCH]).to(encoder.device)
                    out.append(encoder(batch).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed(self, audio16k: np.ndarray) -> np.ndarray:
        """The L2-normalised 256-d speaker embedding of 16 kHz mono audio."""
        return self.analyse(audio16k)[0]

    def partials(self, audio16k: np.ndarray) -> np.ndarray:
        """Embeddings (rows, each L2-normalised) of ~1.6 s windows every ~0.77 s of 16 kHz mono audio."""
        return self.analyse(audio16k)[1]


@dataclass(frozen=True)
class ClipVoice:
    """One clip's speaker verdict.

    ``cluster`` is -1 for a clip left out of clustering: no voice, or ``drift`` above the limit (dropped
    as two voices, whatever else it holds). ``similarity`` is the cosine to the centroid of the clip's
    cluster when that cluster is kept, else to the target's centroid (the reference's embedding when
    no cluster exists).
    """

    cluster: int
    similarity: float
    drift: float
    keep: bool
    speaker: str | None
    reason: str | None


@dataclass(frozen=True)
class Cluster:
    """A group of clips with one voice; ``seconds`` counts their audio at 16 kHz."""

    id: int
    seconds: float
    clips: int
    similarity_to_reference: float | None


@dataclass(frozen=True)
class SpeakerSelection:
    clips: list[ClipVoice]
    clusters: list[Cluster]  # biggest first
    target: int  # -1 when no clip had a single voice


def drift(embedding: np.ndarray, partials: np.ndarray) -> float:
    """1 - the lowest cosine between a ~2.4 s window and the clip's mean; 0 for a clip too short to tell.

    Each window is the mean of two neighbouring partial windows: one 1.6 s partial alone varies with
    its phonemes nearly as much as a second voice does, two together no longer do.
    """
    if len(partials) < MIN_PARTIALS:
        return 0.0
    windows = partials[1:] + partials[:-1]
    windows /= np.linalg.norm(windows, axis=1, keepdims=True)
    return float(1.0 - np.min(windows @ embedding))


def cluster_labels(embeddings: np.ndarray, threshold: float = CLUSTER_DISTANCE) -> np.ndarray:
    """Agglomerative clustering (cosine distance, average linkage, cut at ``threshold``): labels 0..k-1."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=int)
    if len(embeddings) == 1:
        return np.zeros(1, dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distances = np.clip(1.0 - embeddings @ embeddings.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    tree = linkage(squareform(distances, checks=False), method="average")
    return fcluster(tree, t=threshold, criterion="distance") - 1


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def select_speakers(
    clips: Sequence[np.ndarray],
    *,
    encoder: SpeakerEncoder,
    reference: np.ndarray | None = None,
    keep_clusters: int = 1,
    min_similarity: float = MIN_SIMILARITY,
    max_drift: float = MAX_DRIFT,
    speaker_name: str = "speaker",
) -> SpeakerSelection:
    """Which of ``clips`` (16 kHz mono) to keep, and under which speaker name.

    The target speaker is the cluster most similar to ``reference`` (16 kHz mono) when given, else
    the one with the most speech. ``keep_clusters`` > 1 also keeps the next biggest clusters, named
    ``{speaker_name}_1`` (the target), ``{speaker_name}_2``, ...; with 1 the kept clips are ``speaker_name``.
    """
    if keep_clusters < 1:
        raise ValueError(f"keep_clusters must be at least 1, got {keep_clusters}")
    analysed = encoder.analyse_many(clips)
    embeddings = np.stack([e for e, _ in analysed]) if analysed else np.zeros((0, EMBEDDING_SIZE), np.float32)
    drifts = [drift(e, p) for e, p in analysed]
    voiced = [i for i, e in enumerate(embeddings) if np.any(e)]
    single = [i for i in voiced if drifts[i] <= max_drift]
    labels = np.full(len(clips), -1, dtype=int)
    labels[single] = cluster_labels(embeddings[single])

    reference_embedding = encoder.embed(reference) if reference is not None else None
    seconds = [len(clip) / RATE for clip in clips]
    centroids: dict[int, np.ndarray] = {}
    clusters: list[Cluster] = []
    for label in sorted(set(labels[single].tolist())):
        members = np.flatnonzero(labels == label)
        centroids[label] = _unit(embeddings[members].mean(axis=0))
        to_reference = None
        if reference_embedding is not None and np.any(reference_embedding):
            to_reference = float(centroids[label] @ reference_embedding)
        clusters.append(Cluster(label, sum(seconds[i] for i in members), len(members), to_reference))
    clusters.sort(key=lambda c: (-c.seconds, c.id))

    target = -1
    if clusters:
        if reference_embedding is not None and clusters[0].similarity_to_reference is not None:
            target = max(clusters, key=lambda c: (c.similarity_to_reference, c.seconds)).id
        else:
            target = clusters[0].id
    kept = [target, *[c.id for c in clusters if c.id != target][: keep_clusters - 1]] if clusters else []
    names = {label: speaker_name if keep_clusters == 1 else f"{speaker_name}_{i + 1}" for i, label in enumerate(kept)}
    fallback = reference_embedding if reference_embedding is not None else np.zeros(EMBEDDING_SIZE, np.float32)
    target_centroid = centroids.get(target, fallback)

    verdicts = []
    for i, embedding in enumerate(embeddings):
        label = int(labels[i])
        centroid = centroids[label] if label in names else target_centroid
        similarity = float(np.clip(embedding @ centroid, -1.0, 1.0))
        if drifts[i] > max_drift:
            reason: str | None = TWO_VOICES
        elif label not in names or similarity < min_similarity:
            reason = OTHER_SPEAKER
        else:
            reason = None
        speaker = names[label] if reason is None else None
        verdicts.append(ClipVoice(label, similarity, drifts[i], reason is None, speaker, reason))
    return SpeakerSelection(verdicts, clusters, target)
