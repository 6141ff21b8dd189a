"""VideoCLIP: the video-text model, its reward head, the success judge and `wmgym train-videoclip`."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wmgym.cli import main
from wmgym.data.generate import GenerateConfig, generate
from wmgym.data.store import EpisodeStore
from wmgym.rewards.judge import SuccessJudge, calibrate_threshold, first_accept_peaks
from wmgym.rewards.videoclip import UNK, VideoCLIP, VideoCLIPConfig, VideoCLIPHead, build_vocabulary, resample_indices
from wmgym.train.episode_clips import load_clips
from wmgym.train.judge_eval import videoclip_figures
from wmgym.train.videoclip import TrainVideoCLIPConfig, multi_positive_nce, train_videoclip

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = {"fold_left_sleeve": "fold the left sleeve onto the body", "fold_right_sleeve": "fold the right sleeve onto the body",
         "fold_half": "fold the shirt in half, bottom edge to top edge"}


def tiny_model(seed: int = 0, **overrides) -> VideoCLIP:
    """16x16 frames, 4 frames a clip, ~10k parameters."""
    vocabulary = build_vocabulary([*TASKS.values(), "the shirt is not folded yet", "the grippers moved"])
    config = VideoCLIPConfig(image_size=16, num_frames=4, conv_channels=(8, 16), frame_width=16, embed_dim=16, text_width=16,
                             text_heads=2, vocabulary=vocabulary, task_captions=dict(TASKS))
    torch.manual_seed(seed)
    return VideoCLIP(replace(config, **overrides), device="cpu")


def tiny_training(store: Path, out: Path, **overrides) -> TrainVideoCLIPConfig:
    config = TrainVideoCLIPConfig(data=str(store), out=str(out), steps=4, batch_size=8, warmup_steps=2, num_frames=4,
                                  conv_channels=(8, 16), frame_width=16, embed_dim=16, text_width=16, eval_every=1000,
                                  checkpoint_every=1000, log_every=1, device="cpu", show_progress=False)
    return replace(config, **overrides)


def random_clips(batch: int, frames: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.zarr"
    generate(GenerateConfig(out=str(path), episodes=6, resolution=16, workers=1, show_progress=False))
    return path


def test_save_load_roundtrip_is_exact(tmp_path):
    model = tiny_model().eval()  # as loaded (eval mode takes torch's fast transformer path)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)  # a trained, non-initial value
    model.config.success_threshold = 0.37
    model.save_pretrained(tmp_path / "clip")
    loaded = VideoCLIP.from_pretrained(tmp_path / "clip", device="cpu")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    clips, texts = random_clips(3, 5), ["fold the left sleeve onto the body", "the grippers moved"]
    with torch.no_grad():
        assert torch.equal(model.encode_video(clips), loaded.encode_video(clips))
        assert torch.equal(model.encode_text(texts), loaded.encode_text(texts))
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == ["config.json", "model.safetensors"]
    model.save_pretrained(tmp_path / "clip", overwrite=True)  # replacing an existing directory leaves nothing beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_unknown_words_map_to_unk():
    model = tiny_model()
    ids, mask = model.tokenize(["Fold the PURPLE sleeve!", "fold the zebra sleeve", "???"])
    unk = model.config.vocabulary.index(UNK)
    assert ids[0].tolist() == [model.word_ids["fold"], model.word_ids["the"], unk, model.word_ids["sleeve"]]
    assert ids[2].tolist()[:1] == [unk] and mask[2].tolist() == [True, False, False, False]
    with torch.no_grad():
        a, b, _ = model.encode_text(["Fold the PURPLE sleeve!", "fold the zebra sleeve", "???"])
    torch.testing.assert_close(a, b)  # both unknown words read as the same <unk>
    long = " ".join(["fold"] * 100)
    assert model.tokenize([long])[0].shape == (1, model.config.max_text_length)


def test_clip_of_any_length_is_resampled():
    np.testing.assert_array_equal(resample_indices(17, 8), [0, 2, 5, 7, 9, 11, 14, 16])
    np.testing.assert_array_equal(resample_indices(3, 4), [0, 1, 1, 2])  # fewer frames: repeated
    np.testing.assert_array_equal(resample_indices(1, 4), [0, 0, 0, 0])
    model = tiny_model()
    with torch.no_grad():
        for length in (1, 3, 17, 40):
            out = model.encode_video(random_clips(2, length))
            assert out.shape == (2, 16)
            torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
        clip = random_clips(2, 17)
        seen = resample_indices(17, 4)  # [0, 5, 11, 16]
        base = model.encode_video(clip)
        torch.testing.assert_close(model.encode_video(clip[:, seen]), base)  # only the sampled frames count
        unseen = clip.clone()
        unseen[:, 3] = 0
        assert torch.equal(model.encode_video(unseen), base)
        for changed in (0, 16):  # the first and the newest frame are always seen
            other = clip.clone()
            other[:, changed] = 255 - other[:, changed]
            assert not torch.allclose(model.encode_video(other), base)
        # A single (b, H, W, 3) batch is a one-frame clip; other sizes are resized to image_size.
        frame = clip[:, -1]
        torch.testing.assert_close(model.encode_video(frame), model.encode_video(frame[:, None]))
        assert model.encode_video(random_clips(2, 3, size=32)).shape == (2, 16)
    with pytest.raises(ValueError, match="uint8"):
        model.encode_video(clip.float())


def test_head_scores_cosine_and_caches_texts():
    head = VideoCLIPHead(tiny_model())
    clips, goals = random_clips(3, 6), [TASKS["fold_half"], TASKS["fold_half"], "the grippers moved"]
    score = head.score(clips, goals)
    with torch.no_grad():
        expected = (head.model.encode_video(clips) * head.model.encode_text(goals)).sum(-1)
    torch.testing.assert_close(score, expected)
    assert sorted(head._text_cache) == sorted(set(goals))
    assert head.score(clips, TASKS["fold_half"]).shape == (3,)
    assert (head.name, head.goal_kind) == ("videoclip", "text")
    with pytest.raises(ValueError, match="goal text"):
        head.score(clips, ["only one", "two"])


def test_judge_threshold_is_applied():
    model = tiny_model()
    model.config.success_threshold = 0.3
    judge = SuccessJudge(VideoCLIPHead(model))
    assert judge.threshold == 0.3
    clips = random_clips(16, 9)
    p = judge.probability(clips, "fold_half")
    with torch.no_grad():  # softmax over [task, other tasks, not done], the task's share
        texts = model.encode_text([TASKS["fold_half"], TASKS["fold_left_sleeve"], TASKS["fold_right_sleeve"], model.config.not_done_caption])
        expected = torch.softmax(model.scale() * model.encode_video(clips) @ texts.T, -1)[:, 0]
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(judge.probability(clips, TASKS["fold_half"]), p)  # the caption names the task too
    assert torch.equal(judge.judge(clips, "fold_half"), p >= 0.3)
    middle = float(p.median())
    assert torch.equal(SuccessJudge(VideoCLIPHead(model), threshold=middle).judge(clips, "fold_half"), p >= middle)
    assert SuccessJudge(VideoCLIPHead(model), threshold=0.0).judge(clips, "fold_half").all()
    mixed = judge.probability(clips[:2], ["fold_half", "fold_left_sleeve"])
    torch.testing.assert_close(mixed[1], judge.probability(clips[1:2], "fold_left_sleeve")[0])
    with pytest.raises(ValueError, match="unknown task 'fold_socks'"):
        judge.judge(clips, "fold_socks")
    # Calibration picks the most accurate threshold, the middle one of a tie.
    threshold, figures = calibrate_threshold(np.array([0.1, 0.2, 0.6, 0.7]), np.array([False, False, True, True]))
    assert 0.2 < threshold <= 0.6 and figures["accuracy"] == 1.0
    assert threshold == pytest.approx(0.41)  # grid thresholds 0.21..0.60 all separate them
    threshold, figures = calibrate_threshold(np.array([0.1, 0.5, 0.6, 0.9]), np.array([False, True, True, False]))
    assert threshold == pytest.approx(0.31)  # 0.11..0.50 all misjudge only the 0.9
    assert figures == {"accuracy": 0.75, "precision": 2 / 3, "recall": 1.0, "count": 4, "positives": 2}


def test_first_accept_peaks_is_the_environments_verdict():
    # Episode 0: prefixes of 1..4 frames, episode 1: 1..3; the one-frame prefix (the start frame,
    # never judged by the env) is left out, so episode 1's 0.95 does not count.
    probabilities = np.array([0.2, 0.3, 0.7, 0.4, 0.95, 0.1, 0.2])
    episodes = np.array([0, 0, 0, 0, 1, 1, 1])
    lengths = np.array([1, 2, 3, 4, 1, 2, 3])
    peaks = first_accept_peaks(probabilities, episodes, lengths, count=3)
    np.testing.assert_allclose(peaks[:2], [0.7, 0.2])
    assert peaks[2] == -np.inf  # no judged prefix: never accepted
    # At every threshold, "peak >= t" is "some judged prefix is accepted" (first-accept termination).
    for t in (0.15, 0.25, 0.5, 0.8):
        accepted = [any(p >= t for p, e, n in zip(probabilities, episodes, lengths) if e == k and n >= 2) for k in range(3)]
        assert list(peaks >= t) == accepted
    # The two calibration rules disagree when wrong episodes spike once: B (a success, done from
    # its first judged prefix) sits at 0.4, the failures A and C at 0.1 with one 0.45 each.
    # Per prefix, 0.11..0.40 is best (10 of 12 right) and accepts all three episodes; per
    # episode, only a threshold above 0.45 is best (2 of 3 right).
    probabilities = np.array([0.1, 0.1, 0.1, 0.45, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.1, 0.45])
    episodes, lengths = np.repeat([0, 1, 2], 4), np.tile([2, 3, 4, 5], 3)
    prefix_labels = episodes == 1
    prefix_threshold, prefix_figures = calibrate_threshold(probabilities, prefix_labels)
    assert 0.1 < prefix_threshold <= 0.4 and prefix_figures["accuracy"] == 10 / 12
    peaks = first_accept_peaks(probabilities, episodes, lengths, count=3)
    success = np.array([False, True, False])
    assert list(peaks >= prefix_threshold) == [True, True, True]
    episode_threshold, episode_figures = calibrate_threshold(peaks, success)
    assert episode_threshold > 0.45 and episode_figures["accuracy"] == 2 / 3
    with pytest.raises(ValueError, match="episode indices"):
        first_accept_peaks(probabilities, episodes, lengths, count=1)
    with pytest.raises(ValueError, match="equal-length"):
        first_accept_peaks(probabilities, episodes[:3], lengths, count=2)


def test_multi_positive_nce_with_one_positive_is_cross_entropy():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 6, 2, 2])
    positives = torch.nn.functional.one_hot(target, 7).bool()
    torch.testing.assert_close(multi_positive_nce(logits, positives), torch.nn.functional.cross_entropy(logits, target))
    # A second positive is not a negative of the first: two equal top logits cost what one does alone.
    pair = torch.tensor([[5.0, 5.0, 0.0]])
    torch.testing.assert_close(multi_positive_nce(pair, torch.tensor([[True, True, False]])),
                               multi_positive_nce(pair[:, 1:], torch.tensor([[True, False]])))


def test_prefix_labels_follow_the_simulator_success_rule(store):
    episodes = EpisodeStore.open(store)
    clips = load_clips(episodes, np.arange(6))
    for e in range(6):
        done = clips.done[clips.starts[e]: clips.starts[e] + clips.lengths[e]]
        assert done[-1] == clips.success[e] == episodes.read_episode(e)["success"]
        assert not done[0] and np.all(np.diff(done.astype(int)) >= 0)  # once done, done for the rest of the episode
    assert clips.frames.shape == (6 * 17, 16, 16, 3)


def test_train_videoclip_runs_and_separates_two_captions(store, tmp_path):
    # 150 steps (~10 s on one thread) on the 5 train episodes: the loss falls and the training
    # clips find their own captions (chance: 1/2 for the task captions of a success, ~1/3 for outcomes).
    out = train_videoclip(tiny_training(store, tmp_path / "clip", steps=150, batch_size=16, warmup_steps=10, log_every=10,
                                        learning_rate=3e-3, blur_probability=0.0))
    losses = [entry["loss"] for entry in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0], losses
    model = VideoCLIP.from_pretrained(out, device="cpu")
    train = load_clips(EpisodeStore.open(store), np.arange(6))
    figures = videoclip_figures(model, train, prefixes=False)
    assert figures["outcome_top1"] >= 5 / 6 and figures["task_top1"] == 1.0, figures
    calibration = json.loads((out / "calibration.json").read_text())
    assert model.config.success_threshold == calibration["threshold"]
    assert calibration["prefixes"]["count"] == 17  # the one val episode's prefixes of 1..17 frames
    assert calibration["episodes"]["count"] == 1 and calibration["rule"].startswith("max accuracy of the environment's verdict")


def test_resume_continues_identically(store, tmp_path):
    straight = train_videoclip(tiny_training(store, tmp_path / "straight", steps=6, checkpoint_every=3))
    first = tiny_training(store, tmp_path / "resumed", steps=6, checkpoint_every=3)
    with pytest.MonkeyPatch.context() as patch:  # stop right after the step-3 checkpoint
        import wmgym.train.checkpoint as trainer  # write_run_directory's last act

        calls = []
        original = trainer.replace_directory

        def stop_after_checkpoint(tmp, final):
            original(tmp, final)
            calls.append(final)
            raise KeyboardInterrupt

        patch.setattr(trainer, "replace_directory", stop_after_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train_videoclip(first)
    assert json.loads((tmp_path / "resumed/training_state.json").read_text())["step"] == 3
    resumed = train_videoclip(replace(first, resume=True))
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not (resumed / "training_state.safetensors").exists()  # a finished run ships the model only


def test_cli_train_videoclip(store, tmp_path):
    args = ["train-videoclip", "--data", str(store), "--out", str(tmp_path / "clip"), "--steps", "2", "--batch-size", "4",
            "--num-frames", "4", "--conv-channels", "8", "16", "--frame-width", "16", "--embed-dim", "16",
            "--text-width", "16", "--device", "cpu", "--no-show-progress"]
    main(args)
    model = VideoCLIP.from_pretrained(tmp_path / "clip", device="cpu")
    assert (model.config.num_frames, model.config.image_size, model.config.conv_channels) == (4, 16, (8, 16))
    assert model.config.task_captions == TASKS
    judge = SuccessJudge.from_pretrained(tmp_path / "clip", device="cpu")
    assert judge.judge(random_clips(2, 3), "fold_left_sleeve").dtype == torch.bool
    with pytest.raises(SystemExit, match="pass --resume"):
        main(args)


def test_loading_bad_checkpoint_fails_clearly(tmp_path):
    model = tiny_model()
    path = model.save_pretrained(tmp_path / "clip")
    with pytest.raises(FileNotFoundError, match="no VideoCLIP model directory"):
        VideoCLIP.from_pretrained(tmp_path / "nowhere")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "embed_dim": 32}))
    with pytest.raises(ValueError, match=r"model\.safetensors: key '[\w.]+' has shape \((16, )?16,?\), the config needs"):
        VideoCLIP.from_pretrained(path, device="cpu")
    (path / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ValueError, match=r"config\.json: unknown keys \['colour'\]"):
        VideoCLIP.from_pretrained(path, device="cpu")
    (path / "config.json").write_text(json.dumps(config))
    state = load_file(path / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "logit_scale"}, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: missing keys \['logit_scale'\]"):
        VideoCLIP.from_pretrained(path, device="cpu")
    (path / "model.safetensors").unlink()
    (path / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(FileNotFoundError, match=r"missing model\.safetensors \(found \['model\.pt'\]: only safetensors"):
        VideoCLIP.from_pretrained(path, device="cpu")


def test_extra_data_joins_train_and_val_episodes(store, tmp_path):
    from wmgym.data.dataset import split_episodes
    from wmgym.train.episode_clips import join_clips

    replay = tmp_path / "replay.zarr"
    generate(GenerateConfig(out=str(replay), episodes=4, resolution=16, workers=1, show_progress=False, kinds="X"))
    a, b = EpisodeStore.open(store), EpisodeStore.open(replay)
    parts = [load_clips(a, np.arange(6)), load_clips(b, np.arange(4))]
    joined = join_clips(parts)
    assert len(joined.tasks) == 10 and joined.frames.shape[0] == 10 * 17
    for e, (part, k) in enumerate([(0, i) for i in range(6)] + [(1, i) for i in range(4)]):  # each episode's own frames
        rows = joined.frames[joined.starts[e]: joined.starts[e] + joined.lengths[e]]
        source = parts[part]
        assert torch.equal(rows, source.frames[source.starts[k]: source.starts[k] + source.lengths[k]])
        assert joined.done[joined.starts[e] + joined.lengths[e] - 1] == source.success[k] == joined.success[e]
    assert joined.captions[6:] == parts[1].captions
    out = train_videoclip(tiny_training(store, tmp_path / "clip", extra_data=(str(replay),)))
    calibration = json.loads((out / "calibration.json").read_text())
    val_episodes = len(split_episodes(6, "val")) + len(split_episodes(4, "val"))
    assert calibration["episodes"]["count"] == val_episodes == 2
    other = tmp_path / "other.zarr"
    generate(GenerateConfig(out=str(other), episodes=2, resolution=32, workers=1, show_progress=False))
    with pytest.raises(ValueError, match="32x32 frames"):
        train_videoclip(tiny_training(store, tmp_path / "bad", extra_data=(str(other),)))
