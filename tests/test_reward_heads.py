"""Reward heads: LPIPS to a goal image (never downloading its trunk) and X-CLIP to a caption."""

import shutil
import string
import sys
import warnings
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from wmgym.rewards import lpips_head
from wmgym.rewards.base import to_unit_float
from wmgym.rewards.lpips_head import LPIPSHead, default_trunk_path, trunk_weights_url
from wmgym.rewards.xclip import CLIP_MEAN, XCLIPHead

pytestmark = pytest.mark.usefixtures("one_thread")

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # the file name in torchvision's AlexNet_Weights.IMAGENET1K_V1 URL
LINEAR_WEIGHTS = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"  # shipped in the lpips package


def random_frames(seed, shape=(64, 64, 3)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def smooth_frames(seed, batch, size=64):
    """Blurry colour blobs: images with structure, so LPIPS differences are meaningful."""
    noise = torch.from_numpy(random_frames(seed, (batch, 3, 8, 8))).float()
    up = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    return up.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (b, H, W, 3)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch's hub cache pointed at an empty directory: no trunk weights there."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def alexnet_cache(tmp_path_factory):
    """A hub cache holding a (randomly initialised, seeded) torchvision AlexNet state dict
    under the file name torchvision would download it to; returns (hub dir, state dict)."""
    hub = tmp_path_factory.mktemp("hub")
    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    (hub / "checkpoints").mkdir()
    torch.save(state, hub / "checkpoints" / ALEXNET_FILE)
    return hub, state


@pytest.fixture
def pretrained_head(alexnet_cache, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(alexnet_cache[0]))
    return LPIPSHead(device="cpu")


@pytest.fixture(scope="module")
def fallback_head():
    """The offline stand-in (or real LPIPS where the trunk file sits in the user's cache):
    the properties tested with it hold for any trunk."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LPIPSHead(allow_offline_fallback=True, device="cpu")


# --- LPIPS: where the trunk comes from -------------------------------------------------------


def test_lpips_default_trunk_path_is_torchvisions_cache_file(empty_hub):
    assert trunk_weights_url("alex").endswith("/" + ALEXNET_FILE)
    assert default_trunk_path("alex") == empty_hub / "checkpoints" / ALEXNET_FILE


def test_lpips_missing_weights_error_says_where_to_put_them(empty_hub):
    with pytest.raises(FileNotFoundError) as error:
        LPIPSHead(device="cpu")
    message = str(error.value)
    assert str(empty_hub / "checkpoints" / ALEXNET_FILE) in message
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url in message
    assert "allow_offline_fallback=True" in message
    assert not (empty_hub / "checkpoints").exists(), "nothing may be downloaded or created"


def test_lpips_explicit_trunk_path_that_is_missing_is_an_error_even_with_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        LPIPSHead(trunk_weights=tmp_path / "nope.pth", allow_offline_fallback=True, device="cpu")


def test_lpips_fallback_warns_once_and_is_deterministic(empty_hub, monkeypatch):
    monkeypatch.setattr(lpips_head, "_warned_offline_fallback", False)
    frames, goal = smooth_frames(0, 2), smooth_frames(1, 2)
    rng_before = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = LPIPSHead(allow_offline_fallback=True, device="cpu")
        second = LPIPSHead(allow_offline_fallback=True, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before), "building a head must not move the global RNG"
    fallback_warnings = [w for w in caught if "NOT real LPIPS" in str(w.message)]
    assert len(fallback_warnings) == 1
    assert not [w for w in caught if "deprecated" in str(w.message)], "torchvision's deprecation noise is hidden"
    assert not first.is_pretrained and first.trunk_weights is None
    assert torch.equal(first.score(frames, goal), second.score(frames, goal))


def test_lpips_loads_trunk_weights_from_the_cache(pretrained_head, alexnet_cache):
    _, state = alexnet_cache
    assert pretrained_head.is_pretrained
    assert pretrained_head.trunk_weights.name == ALEXNET_FILE
    trunk = pretrained_head.model.net
    for index in range(1, trunk.N_slices + 1):
        for name, param in getattr(trunk, f"slice{index}").named_parameters():
            assert torch.equal(param, state[f"features.{name}"]), name
    # the package's human-calibrated linear layers are loaded too
    lins = torch.load(LINEAR_WEIGHTS, map_location="cpu", weights_only=True)
    for key, value in lins.items():
        assert torch.equal(pretrained_head.model.state_dict()[key], value), key


def test_lpips_matches_a_direct_computation_from_torchvision_features(pretrained_head, alexnet_cache):
    """LPIPS v0.1 written out (Zhang et al. 2018, eq. 1) over torchvision's AlexNet: the trunk
    slices must tap the ReLUs after conv1..conv5 (features indices 1, 4, 7, 9, 11)."""
    _, state = alexnet_cache
    alexnet = torchvision.models.alexnet(weights=None)
    alexnet.load_state_dict(state)
    lins = torch.load(LINEAR_WEIGHTS, map_location="cpu", weights_only=True)
    frames, goal = smooth_frames(2, 3), smooth_frames(3, 3)
    shift = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def taps(x):
        outs, h = [], (to_unit_float(torch.from_numpy(x)) - shift) / scale
        for i, layer in enumerate(alexnet.features[:12]):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):
                outs.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return outs

    with torch.no_grad():
        expected = sum(
            F.conv2d((a - b) ** 2, lins[f"lin{k}.model.1.weight"]).mean((1, 2, 3))
            for k, (a, b) in enumerate(zip(taps(frames), taps(goal)))
        )
    torch.testing.assert_close(pretrained_head.distance(frames, goal), expected, rtol=1e-5, atol=1e-6)


def test_lpips_rejects_a_file_that_is_not_an_alexnet_state_dict(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="wrong.pth"):
        LPIPSHead(trunk_weights=path, device="cpu")


# --- LPIPS: what it scores ---------------------------------------------------------------------


def test_lpips_identical_frame_scores_highest(fallback_head):
    goal = smooth_frames(4, 1)[0]
    other = smooth_frames(5, 1)[0]
    frames = np.stack([goal, other])[:, None]  # (2, 1, H, W, 3)
    distance = fallback_head.distance(frames, goal)
    score = fallback_head.score(frames, goal)
    assert distance[0].abs() < 1e-6
    assert distance[1] > 1e-3
    assert score[0] > score[1]
    torch.testing.assert_close(score, -distance)


def test_lpips_looks_only_at_the_newest_frame(fallback_head):
    goal, a, b = smooth_frames(6, 3)
    episode_one = np.stack([a, goal])[None]  # (1, 2, H, W, 3): ends at the goal
    episode_two = np.stack([b, goal])[None]
    assert torch.equal(fallback_head.score(episode_one, goal), fallback_head.score(episode_two, goal))
    assert fallback_head.distance(episode_one, goal)[0].abs() < 1e-6


def test_lpips_goal_of_another_size_is_resized(fallback_head):
    frames = smooth_frames(7, 2)  # (2, 64, 64, 3)
    big_goal = smooth_frames(8, 1, size=96)[0]  # (96, 96, 3)
    resized = F.interpolate(to_unit_float(torch.from_numpy(big_goal))[None], size=(64, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = fallback_head.model(to_unit_float(torch.from_numpy(frames)), resized.expand(2, -1, -1, -1)).reshape(2)
    torch.testing.assert_close(fallback_head.distance(frames, big_goal), expected)
    # a goal that is the frame at twice the size is nearly the frame itself
    frame = frames[:1]
    upscaled = np.repeat(np.repeat(frame[0], 2, axis=0), 2, axis=1)  # (128, 128, 3)
    assert fallback_head.distance(frame, upscaled) < 0.2 * fallback_head.distance(frame, frames[1])


def test_lpips_batch_scores_match_single_scores_and_live_on_the_device(fallback_head):
    frames = np.stack([smooth_frames(9, 3), smooth_frames(10, 3)], axis=1)  # (3, 2, H, W, 3)
    goals = smooth_frames(11, 3)
    scores = fallback_head.score(frames, goals)
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert scores.device == fallback_head.device == torch.device("cpu")
    singles = torch.cat([fallback_head.score(frames[i : i + 1], goals[i]) for i in range(3)])
    torch.testing.assert_close(scores, singles, rtol=1e-5, atol=1e-6)
    assert len(set(scores.tolist())) == 3


def test_lpips_auto_device_follows_cuda_availability(alexnet_cache, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(alexnet_cache[0]))
    head = LPIPSHead(device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert head.device.type == expected
    assert next(head.model.parameters()).device.type == expected


def test_lpips_rejects_bad_inputs(fallback_head):
    frames = smooth_frames(12, 2)
    with pytest.raises(ValueError, match="uint8"):
        fallback_head.score(frames.astype(np.float32), frames[0])
    with pytest.raises(ValueError, match="goal"):
        fallback_head.score(frames, frames[0, :, :, :2])
    with pytest.raises(ValueError, match="goal images for a batch of 2"):
        fallback_head.score(frames, np.stack([frames[0]] * 3))
    with pytest.raises(ValueError, match="at least 31 pixels"):
        fallback_head.score(frames[:, :16, :16], frames[0, :16, :16])
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPSHead(net="resnet", allow_offline_fallback=True)


# --- X-CLIP from a local directory ---------------------------------------------------------------

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def xclip_dir(tmp_path_factory):
    """A tiny random X-CLIP (2-layer-wide everything, 32x32 frames, 4 frames) and a character-level
    CLIP tokenizer, saved as a user would save a downloaded checkpoint."""
    transformers = pytest.importorskip("transformers")
    vocab = {c: i for i, c in enumerate(string.ascii_lowercase)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(string.ascii_lowercase)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # highest id: the text model pools at the argmax token
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    config = transformers.XCLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=32,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
            patch_size=16, num_frames=NUM_FRAMES, mit_hidden_size=16, mit_intermediate_size=32,
            mit_num_hidden_layers=1, mit_num_attention_heads=2,
        ),
        projection_dim=16, prompt_layers=1, prompt_num_attention_heads=2,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("xclip")
    transformers.XCLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def xclip_head(xclip_dir):
    return XCLIPHead.from_local(xclip_dir, device="cpu")


def test_xclip_reads_the_model_settings_from_the_directory(xclip_head):
    assert (xclip_head.num_frames, xclip_head.image_size) == (NUM_FRAMES, 32)
    assert torch.equal(xclip_head.image_mean.flatten(), torch.tensor(CLIP_MEAN))


def test_xclip_score_is_the_models_cosine_similarity(xclip_head):
    frames = smooth_frames(20, 2 * 6).reshape(2, 6, 64, 64, 3)
    scores = xclip_head.score(frames, "fold the shirt")
    assert scores.shape == (2,) and scores.dtype == torch.float32 and scores.device == xclip_head.device
    model = xclip_head.model
    tokens = xclip_head.tokenizer(["fold the shirt"], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=xclip_head.pixel_values(frames), **tokens)
    torch.testing.assert_close(scores, out.logits_per_video[:, 0] / model.logit_scale.exp())
    assert (scores.abs() <= 1 + 1e-6).all()


def test_xclip_same_text_same_video_same_score(xclip_head):
    clip = smooth_frames(21, 5)[None]  # (1, 5, H, W, 3)
    frames = np.concatenate([clip, clip])
    scores = xclip_head.score(frames, ["fold the shirt", "fold the shirt"])
    assert scores[0] == scores[1]
    assert torch.equal(xclip_head.score(frames, "fold the shirt"), scores), "scoring is deterministic"
    torch.testing.assert_close(xclip_head.score(clip, "fold the shirt"), scores[:1])  # batch size 1


def test_xclip_different_texts_give_different_scores(xclip_head):
    clip = smooth_frames(22, 5)[None]
    assert xclip_head.score(clip, "fold the shirt") != xclip_head.score(clip, "open the gripper")


def test_xclip_mixed_captions_in_a_batch_match_one_by_one(xclip_head):
    frames = smooth_frames(23, 2 * 3).reshape(2, 3, 64, 64, 3)
    texts = ["fold the shirt", "open the gripper"]
    scores = xclip_head.score(frames, texts)
    singles = torch.cat([xclip_head.score(frames[i : i + 1], texts[i]) for i in range(2)])
    torch.testing.assert_close(scores, singles, rtol=1e-5, atol=1e-6)


def test_xclip_samples_num_frames_evenly_and_repeats_short_clips(xclip_head):
    def clip_of(t):  # frame i is flat grey level 10 * i
        return np.stack([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(t)])[None]

    std, mean = xclip_head.image_std, xclip_head.image_mean
    for t, expected_levels in ((7, [0, 20, 40, 60]), (2, [0, 0, 10, 10]), (1, [0, 0, 0, 0])):
        pixels = xclip_head.pixel_values(clip_of(t))
        assert pixels.shape == (1, NUM_FRAMES, 3, 32, 32)
        levels = ((pixels * std + mean)[0, :, 0, 0, 0] * 255).round().tolist()
        assert levels == expected_levels, t


def test_xclip_reads_normalisation_from_a_processor_config(xclip_dir, tmp_path):
    copy = shutil.copytree(xclip_dir, tmp_path / "copy")
    (copy / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}')
    head = XCLIPHead.from_local(copy, device="cpu")
    white = np.full((1, 1, 64, 64, 3), 255, np.uint8)
    assert torch.allclose(head.pixel_values(white), torch.tensor(2.0))


def test_xclip_missing_directory_or_config_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no X-CLIP directory"):
        XCLIPHead.from_local(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        XCLIPHead.from_local(tmp_path / "empty")


def test_xclip_without_transformers_says_how_to_install(xclip_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r'pip install "wmgym\[xclip\]"'):
        XCLIPHead.from_local(xclip_dir)


def test_xclip_rejects_bad_goals(xclip_head):
    frames = smooth_frames(24, 2).reshape(1, 2, 64, 64, 3)
    with pytest.raises(ValueError, match="goal text"):
        xclip_head.score(frames, ["a", "b"])
    with pytest.raises(ValueError, match="goal text"):
        xclip_head.score(frames, "   ")
