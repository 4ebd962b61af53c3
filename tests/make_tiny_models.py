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

A ``.complete`` marker holds a hash of this script: the output is reused when
the script has not changed, and rebuilt when it has.
"""

from __future__ import annotations

import hashlib
import json
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


def espeak(text: str, voice: str, out: Path) -> None:
    """Speak ``text`` into a WAV file with Debian's espeak-ng."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], check=True)


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
            espeak("This is the reference voice of a built in speaker.", voice, wav)
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


def build(out_dir: Path) -> Path:
    """Build the kit into ``out_dir`` unless an identical one is already there."""
    marker = out_dir / ".complete"
    if marker.is_file() and marker.read_text().strip() == kit_hash():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kit-", dir=out_dir))
    try:
        build_xtts(staging / "xtts")
        target = out_dir / "xtts"
        if target.exists():
            shutil.rmtree(target)
        (staging / "xtts").rename(target)
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
