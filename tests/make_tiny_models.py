"""Write tiny, randomly initialised models in the real on-disk formats.

Usage: ``python tests/make_tiny_models.py OUT_DIR``

The XTTS folder (``OUT_DIR/xtts``) is what Coqui's own ``Xtts.load_checkpoint``
reads: ``config.json``, ``model.pth`` (``{"model": state_dict}``), a real BPE
``vocab.json`` with XTTS's special and language tokens, ``speakers_xtts.pth``
with built-in speakers, and the training files ``dvae.pth`` and
``mel_stats.pth``. The GPT is tiny; the HiFiGAN decoder and speaker encoder
keep their real size because their shapes are fixed by the format.

The stop token's logit is pushed far down so random weights never emit it and
``gpt_max_audio_tokens`` bounds every generation: each chunk is the same length
(about 4.5 s of audio), which keeps timings in tests and benchmarks comparable.

The RVC folder (``OUT_DIR/rvc``) holds what the RVC engine reads, each in the
format RVC itself writes: voice models ``tiny_v1_40k.pth`` ... ``tiny_v2_48k.pth``
(``{"weight": half-precision state dict without enc_q, "config": [...], "info",
"sr", "f0", "version"}`` with tiny channel counts), faiss IVF-Flat indexes
``tiny_v1.index`` / ``tiny_v2.index`` over random 256/768-dim features, and
``support/`` with a fairseq ``hubert_base.pt`` (one 768-wide layer, a 256-dim
``final_proj``, the real 320x feature stride) and ``rmvpe.pt``, whose network the
loader builds at full size (so the file is 181 MB of random half-precision weights).

The separation folder (``OUT_DIR/separation``) holds an HT-Demucs checkpoint under the
official htdemucs file name, written as Demucs's ``serialize_model`` writes it (``{"klass":
HTDemucs, "args", "kwargs" (with a Fraction segment), "state" (half precision), "training_args"
(with a NumPy scalar, like the official files)}``) with the real STFT
and depth but 4 channels, one transformer layer and a 1.95 s segment: a ``VocalSeparator``
with ``models_dir=OUT_DIR`` finds it and never downloads.

A ``.complete`` marker holds a hash of this script: the output is reused when
the script has not changed, and rebuilt when it has.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SEED = 1234
LANG_TOKENS = [
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar",
    "zh-cn", "hu", "ko", "ja", "hi",
]  # fmt: skip
SPECIAL_TOKENS = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{t}]" for t in LANG_TOKENS]
SPEAKERS = {
    "Claribel Dervla": "en+f3",
    "Daisy Studious": "en+f4",
    "Andrew Chipper": "en+m3",
}
TINY_ARGS = {
    "gpt_layers": 2,
    "gpt_n_model_channels": 64,
    "gpt_n_heads": 2,
    "gpt_num_audio_tokens": 258,
    "gpt_start_audio_token": 256,
    "gpt_stop_audio_token": 257,
    "gpt_max_audio_tokens": 100,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_use_perceiver_resampler": True,
    "gpt_use_masking_gt_prompt_approach": True,
    "decoder_input_dim": 64,
    "d_vector_dim": 512,
}
CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "hello world, this is a tiny voice model for testing.",
    "she sells sea shells by the sea shore!",
    "how are you today? i am fine, thank you.",
    "numbers like one, two, three and four are spoken as words.",
    "a studio for voices: clone, convert, train and listen.",
    "el rápido zorro marrón salta sobre el perro perezoso.",
    "le renard brun rapide saute par-dessus le chien paresseux.",
    "der schnelle braune fuchs springt über den faulen hund.",
]


def kit_hash() -> str:
    """Identity of this generator; a changed script rebuilds the kit."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def write_vocab(path: Path) -> None:
    """Train a real (small) BPE tokenizer in the format XTTS's VoiceBpeTokenizer loads."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;\"()áéíóúñüöäàèçß")
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer.save(str(path))


def espeak(text: str, out: Path, *, voice: str = "en", speed: int = 150, pitch: int | None = None) -> Path:
    """Speak ``text`` into a WAV file (22.05 kHz mono) with Debian's espeak-ng (``pitch`` 0-99, espeak's -p).

    Its PulseAudio client leaves a cookie under XDG_CONFIG_HOME even when it only writes a file,
    so it gets a throwaway one: a fresh machine's home stays as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as config:
        pitch_args = [] if pitch is None else ["-p", str(pitch)]
        command = ["espeak-ng", "-v", voice, "-s", str(speed), *pitch_args, "-w", str(out), text]
        subprocess.run(command, check=True, env={**os.environ, "XDG_CONFIG_HOME": config})
    return out


def build_xtts(out: Path) -> None:
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.dvae import DiscreteVAE
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    torch.manual_seed(SEED)
    out.mkdir(parents=True)
    write_vocab(out / "vocab.json")

    config = XttsConfig()
    for key, value in TINY_ARGS.items():
        setattr(config.model_args, key, value)
    config.model_args.tokenizer_file = str(out / "vocab.json")
    config.model_dir = None
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
    model.init_models()
    with torch.no_grad():  # random weights must never stop early: every chunk runs to the length bound
        model.gpt.mel_head.bias[TINY_ARGS["gpt_stop_audio_token"]] = -1e4
    config.model_args.tokenizer_file = ""
    torch.save({"model": model.state_dict()}, out / "model.pth")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    model.load_checkpoint(config, checkpoint_dir=str(out), eval=True)
    speakers: dict[str, dict[str, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, voice in SPEAKERS.items():
            wav = Path(tmp) / "ref.wav"
            espeak("This is the reference voice of a built in speaker.", wav, voice=voice)
            latent, embedding = model.get_conditioning_latents(audio_path=[str(wav)])
            speakers[name] = {"gpt_cond_latent": latent.cpu(), "speaker_embedding": embedding.cpu()}
    torch.save(speakers, out / "speakers_xtts.pth")

    dvae = DiscreteVAE(
        channels=80,
        normalization=None,
        positional_dims=1,
        num_tokens=TINY_ARGS["gpt_num_audio_tokens"] - 2,
        codebook_dim=512,
        hidden_dim=512,
        num_resnet_blocks=3,
        kernel_size=3,
        num_layers=2,
        use_transposed_convs=False,
    )
    torch.save(dvae.state_dict(), out / "dvae.pth")
    torch.save(torch.ones(80) * 0.5, out / "mel_stats.pth")


RVC_DIMS = {"v1": 256, "v2": 768}
# The upsampling product is the hop (10 ms of output), as in RVC's own configs for these rates.
RVC_UPSAMPLING = {40000: ([10, 10, 2, 2], [16, 16, 4, 4]), 48000: ([12, 10, 2, 2], [24, 20, 4, 4])}


def rvc_config(sample_rate: int) -> list[object]:
    """RVC's 18-entry synthesizer config with tiny channel counts (inter, hidden, filter = 16, 16, 32; 1 layer)."""
    rates, kernels = RVC_UPSAMPLING[sample_rate]
    return [1025, 32, 16, 16, 32, 2, 1, 3, 0, "1", [3], [[1, 3, 5]], rates, 32, kernels, 1, 16, sample_rate]


def build_rvc(out: Path) -> None:
    """RVC voice models, indexes and the support weights (HuBERT, RMVPE) in their real formats."""
    from collections import OrderedDict

    import faiss
    import numpy as np
    import torch
    from fairseq.data.dictionary import Dictionary
    from fairseq.models.hubert.hubert import HubertConfig, HubertModel
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
    from omegaconf import OmegaConf
    from tts_with_rvc.infer.lib.infer_pack.models import SynthesizerTrnMs256NSFsid, SynthesizerTrnMs768NSFsid
    from tts_with_rvc.infer.lib.rmvpe import E2E

    torch.manual_seed(SEED)
    support = out / "support"
    support.mkdir(parents=True)
    for version, net_class in (("v1", SynthesizerTrnMs256NSFsid), ("v2", SynthesizerTrnMs768NSFsid)):
        for rate in RVC_UPSAMPLING:
            config = rvc_config(rate)
            net = net_class(*config, is_half=False)
            weight = OrderedDict((k, v.half()) for k, v in net.state_dict().items() if "enc_q" not in k)
            checkpoint = OrderedDict(
                weight=weight, config=config, info="0epoch", sr=f"{rate // 1000}k", f0=1, version=version
            )
            torch.save(checkpoint, out / f"tiny_{version}_{rate // 1000}k.pth")
        features = np.random.default_rng(SEED).standard_normal((400, RVC_DIMS[version])).astype("float32")
        index = faiss.index_factory(RVC_DIMS[version], "IVF8,Flat")
        faiss.extract_index_ivf(index).nprobe = 1
        index.train(features)
        index.add(features)
        faiss.write_index(index, str(out / f"tiny_{version}.index"))

    model_cfg = HubertConfig(
        label_rate=50,
        encoder_layers=1,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=64,
        encoder_attention_heads=2,
        final_dim=256,
        conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
        conv_pos=16,
        conv_pos_groups=16,
    )
    task_cfg = HubertPretrainingConfig(data="", labels=["km"], label_dir=None, sample_rate=16000)
    labels = Dictionary()
    for unit in range(8):
        labels.add_symbol(str(unit))
    hubert = HubertModel(model_cfg, task_cfg, [labels])
    cfg = {
        "_name": None,
        "common": {},
        "model": {**OmegaConf.to_container(OmegaConf.structured(model_cfg), enum_to_str=True), "_name": "hubert"},
        "task": {
            **OmegaConf.to_container(OmegaConf.structured(task_cfg), enum_to_str=True),
            "_name": "hubert_pretraining",
        },
    }
    history = [{"criterion_name": "hubert", "optimizer_name": "adam", "lr_scheduler_state": {}, "num_updates": 0}]
    torch.save(
        {
            "args": None,
            "cfg": cfg,
            "model": hubert.state_dict(),
            "task_state": {"dictionaries": [labels]},
            "optimizer_history": history,
            "extra_state": {"train_iterator": None},
            "last_optimizer_state": None,
        },
        support / "hubert_base.pt",
    )
    rmvpe = E2E(4, 1, (2, 2))
    torch.save({k: v.half() for k, v in rmvpe.state_dict().items()}, support / "rmvpe.pt")


HTDEMUCS_KWARGS: dict[str, object] = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "samplerate": 44100,
    "channels": 4,
    "growth": 2,
    "nfft": 4096,
    "depth": 4,
    "dconv_mode": 3,
    "dconv_comp": 4,
    "bottom_channels": 0,
    "t_layers": 1,
    "t_heads": 2,
    "t_hidden_scale": 1.0,
    "t_dropout": 0.02,
}


def build_htdemucs(out: Path, *, published_size: bool = False) -> Path:
    """A tiny HT-Demucs in Demucs's checkpoint format at ``out/separation/<official htdemucs name>``.

    ``published_size``: Demucs's own defaults instead (the size of the published htdemucs, 42 M
    parameters), random weights all the same: what the benchmark times separation with.
    """
    from fractions import Fraction

    import numpy as np
    import torch
    from demucs.htdemucs import HTDemucs

    from train.separation import MODELS

    torch.manual_seed(SEED)
    if published_size:
        model = HTDemucs(sources=HTDEMUCS_KWARGS["sources"], segment=Fraction(39, 5))
    else:
        model = HTDemucs(**HTDEMUCS_KWARGS, segment=Fraction(39, 20))
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": HTDemucs,
        "args": args,
        "kwargs": kwargs,
        "state": {k: v.detach().to("cpu", torch.half) for k, v in model.state_dict().items()},
        # the official files carry NumPy float64 scalars among the training arguments
        "training_args": {"dset": {"sources": HTDEMUCS_KWARGS["sources"], "segment": 1.95}, "lr": np.float64(3e-4)},
    }
    target = out / "separation" / Path(MODELS["htdemucs"]).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(package, target)
    return target


def build(out_dir: Path) -> Path:
    """Build the kit into ``out_dir`` unless an identical one is already there."""
    marker = out_dir / ".complete"
    if marker.is_file() and marker.read_text().strip() == kit_hash():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kit-", dir=out_dir))
    try:
        build_xtts(staging / "xtts")
        build_rvc(staging / "rvc")
        build_htdemucs(staging)
        for part in ("xtts", "rvc", "separation"):
            target = out_dir / part
            if target.exists():
                shutil.rmtree(target)
            (staging / part).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(kit_hash())
    return out_dir


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    out = build(Path(argv[1]).resolve())
    print(f"tiny models ready in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
