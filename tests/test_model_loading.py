"""Loading models refuses damaged configs and weights with one line naming the file and the key,
and sampling refuses settings or weights that would give non-finite (silently black) frames
(issue 36, items 3 and 7). Tiny models saved to tmp, then corrupted one way at a time."""

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.grasp_prior import GraspPrior, GraspPriorConfig
from wmgym.model.imagination import Imagination, NonFiniteLatentsError
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.rewards.videoclip import VideoCLIP, VideoCLIPConfig, build_vocabulary

SIZE = 16


def tiny_config(**overrides) -> WorldModelConfig:
    denoiser = DenoiserConfig(latent_channels=3, latent_height=SIZE, latent_width=SIZE, patch_size=8, width=16, depth=1, num_heads=2)
    return WorldModelConfig(height=SIZE, width=SIZE, denoiser=asdict(denoiser), sampler=asdict(SamplerDefaults(num_steps=2)), **overrides)


def tiny_model(seed: int = 0) -> WorldModel:
    """Random weights (a fresh model's zero output layer would hide a broken one)."""
    model = WorldModel(tiny_config(), device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def inputs(horizon: int = 2):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (1, 1, SIZE, SIZE, 3), dtype=np.uint8), rng.normal(size=(1, horizon, 20)).astype(np.float32) * 0.1


def edit_config(path, edit) -> None:
    """Apply `edit(config dict)` to path/config.json, written as Python's json writes it (NaN as NaN)."""
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def assert_one_line_naming(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def set_item(key: str, index: int, value):
    return lambda config: config[key].__setitem__(index, value)


def set_nested(section: str, key: str, value):
    return lambda config: config[section].__setitem__(key, value)


WORLD_MODEL_CONFIG_DAMAGE = {
    "action_std_zero": (set_item("action_std", 5, 0.0), "action_std[5]"),
    "action_std_nan": (set_item("action_std", 0, math.nan), "action_std[0]"),
    "action_mean_inf": (set_item("action_mean", 3, math.inf), "action_mean[3]"),
    "action_mean_short": (lambda c: c.__setitem__("action_mean", c["action_mean"][:19]), "action_mean must be a list of 20"),
    "action_std_long": (lambda c: c.__setitem__("action_std", c["action_std"] + [1.0]), "action_std must be a list of 20"),
    "action_min_nan": (lambda c: c.update(action_min=[math.nan] * 20, action_max=[1.0] * 20), "action_min[0]"),
    "pose_std_zero": (lambda c: c.update(pose_mean=[0.0] * 8, pose_std=[0.0] * 8), "pose_std[0]"),  # a config saved before condition_vectors
    "vector_std_zero": (lambda c: c.update(condition_vectors={"held": {"size": 2, "mean": [0.5, 0.5], "std": [0.5, 0.0]}}),
                        "condition_vectors['held'].std[1]"),
    "vector_without_std": (lambda c: c.update(condition_vectors={"held": {"size": 2, "mean": [0.5, 0.5]}}),
                           "condition_vectors['held'] needs keys size, mean, std"),
    "guidance_nan": (set_nested("sampler", "guidance_scale", math.nan), "sampler.guidance_scale"),
    "guidance_negative": (set_nested("sampler", "guidance_scale", -1.0), "sampler.guidance_scale"),
    "num_steps_zero": (set_nested("sampler", "num_steps", 0), "sampler.num_steps"),
    "num_steps_float": (set_nested("sampler", "num_steps", 2.5), "sampler.num_steps"),
    "sampler_unknown_key": (lambda c: c.__setitem__("sampler", {"num_stepz": 2}), "sampler: unknown keys ['num_stepz']"),
    "height_as_string": (lambda c: c.__setitem__("height", "64"), "height must be an int"),
    "denoiser_width_as_string": (set_nested("denoiser", "width", "16"), "denoiser.width must be an int"),
    "denoiser_unknown_key": (set_nested("denoiser", "depht", 1), "denoiser: unknown keys ['depht']"),
    "codec_unknown_key": (set_nested("codec", "patchh", 2), "codec: unknown keys ['patchh']"),
    "codec_patch_as_string": (set_nested("codec", "patch", "1"), "codec patch must be an int"),
}


@pytest.mark.parametrize("damage", sorted(WORLD_MODEL_CONFIG_DAMAGE))
def test_world_model_config_damage_is_refused_naming_the_file_and_key(tmp_path, damage):
    edit, key = WORLD_MODEL_CONFIG_DAMAGE[damage]
    path = tiny_model().save_pretrained(tmp_path / "wm")
    edit_config(path, edit)
    with pytest.raises(ValueError) as error:
        WorldModel.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "config.json"), key)


def test_invalid_json_in_a_world_model_config_is_refused_naming_the_file(tmp_path):
    path = tiny_model().save_pretrained(tmp_path / "wm")
    (path / "config.json").write_text('{"height": 16,')
    with pytest.raises(ValueError, match="is not valid JSON") as error:
        WorldModel.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "config.json"))
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        WorldModel.from_pretrained(path, device="cpu")


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(ValueError, match=r"action_std\[2\] must be a finite number > 0"):
        tiny_config(action_std=[1.0, 1.0, 0.0] + [1.0] * 17)
    with pytest.raises(ValueError, match="action_mean must be a list of 20 numbers, got 6 values"):
        tiny_config(action_mean=[0.0] * 6)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        SamplerDefaults(guidance_scale=math.nan)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        SamplerDefaults(num_steps=0)
    config = tiny_config()
    config.sampler = {**config.sampler, "guidance_scale": math.inf}  # edited after construction
    with pytest.raises(ValueError, match="sampler.guidance_scale"):
        WorldModel(config, device="cpu")


def test_non_finite_weights_are_refused_naming_the_file_and_key(tmp_path):
    path = tiny_model().save_pretrained(tmp_path / "wm")
    state = load_file(path / "denoiser.safetensors")
    state["patch_out.weight"][0, 0] = math.nan
    save_file(state, path / "denoiser.safetensors")
    with pytest.raises(ValueError) as error:
        WorldModel.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "denoiser.safetensors"), "'patch_out.weight'", "non-finite")


def test_random_bytes_in_the_weights_are_refused(tmp_path):
    path = tiny_model().save_pretrained(tmp_path / "wm")
    data = bytearray((path / "denoiser.safetensors").read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")  # safetensors: u64 header length, JSON header, then the tensors
    data[header:] = b"\xff" * (len(data) - header)  # 0xffffffff is a float32 NaN
    (path / "denoiser.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="holds non-finite values") as error:
        WorldModel.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "denoiser.safetensors"))


@pytest.mark.parametrize("arguments, name", [({"guidance_scale": math.nan}, "guidance_scale"),
                                             ({"guidance_scale": math.inf}, "guidance_scale"),
                                             ({"guidance_scale": -0.5}, "guidance_scale"),
                                             ({"num_steps": 1.5}, "num_steps"),
                                             ({"num_steps": math.nan}, "num_steps")])
def test_bad_sampler_overrides_are_refused_naming_the_argument(arguments, name):
    model = tiny_model()
    with pytest.raises(ValueError, match=f"^{name} must be"):
        Imagination(model, 1, **arguments)
    frames, actions = inputs()
    with pytest.raises(ValueError, match=f"^{name} must be"):
        model.rollout(frames, actions, **arguments)


def test_a_model_whose_weights_give_nan_raises_instead_of_returning_black_frames():
    model = tiny_model()
    frames, actions = inputs(horizon=3)
    assert model.rollout(frames, actions, generator=torch.Generator().manual_seed(0)).shape == (1, 3, SIZE, SIZE, 3)
    with torch.no_grad():
        model.denoiser.patch_out.weight[0, 0] = math.inf  # after loading: past the load checks
    with pytest.raises(NonFiniteLatentsError, match="non-finite latents at generated frame 1; its weights or sampler settings"):
        model.rollout(frames, actions, generator=torch.Generator().manual_seed(0))


def test_non_finite_latents_do_not_decode_to_black_frames():
    model = tiny_model()
    latents = torch.zeros(1, 2, 3, SIZE, SIZE)
    latents[0, 1, 0, 0, 0] = math.nan
    with pytest.raises(NonFiniteLatentsError, match="non-finite pixels"):
        model.decode_latents(latents)


# ------------------------------------------------------------ grasp prior, codec, VideoCLIP
def tiny_prior() -> GraspPrior:
    torch.manual_seed(0)
    return GraspPrior(GraspPriorConfig(hidden=8, feature_mean=[0.0] * 18, feature_std=[1.0] * 18))


@pytest.mark.parametrize("edit, key", [(set_item("feature_std", 4, 0.0), "feature_std[4]"),
                                       (set_item("feature_mean", 0, math.nan), "feature_mean[0]"),
                                       (lambda c: c.__setitem__("window", "2"), "window must be an int"),
                                       (lambda c: c.__setitem__("feature_std", [1.0] * 17), "feature_std must be a list of 18")])
def test_grasp_prior_config_damage_is_refused_naming_the_file_and_key(tmp_path, edit, key):
    path = tiny_prior().save_pretrained(tmp_path / "prior")
    edit_config(path, edit)
    with pytest.raises(ValueError) as error:
        GraspPrior.from_pretrained(path)
    assert_one_line_naming(error, str(path / "config.json"), key)


def test_grasp_prior_invalid_json_and_non_finite_weights_are_refused(tmp_path):
    path = tiny_prior().save_pretrained(tmp_path / "prior")
    state = load_file(path / "model.safetensors")
    state["net.0.bias"][1] = -math.inf
    save_file(state, path / "model.safetensors")
    with pytest.raises(ValueError) as error:
        GraspPrior.from_pretrained(path)
    assert_one_line_naming(error, str(path / "model.safetensors"), "'net.0.bias'", "non-finite")
    (path / "config.json").write_text("{window: 2}")
    with pytest.raises(ValueError) as error:
        GraspPrior.from_pretrained(path)
    assert_one_line_naming(error, str(path / "config.json"), "not valid JSON")


def test_codec_checkpoint_damage_is_refused_naming_the_file_and_key(tmp_path):
    from wmgym.model.autoencoder import AutoencoderKLCodec
    from wmgym.train.codec import load_codec

    torch.manual_seed(0)
    codec = AutoencoderKLCodec.small(latent_channels=2, block_out_channels=(8, 8), norm_num_groups=4, use_mid_block_attention=False)
    path = tmp_path / "codec"
    path.mkdir()
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, path / "codec.safetensors")
    for scaling in (0.0, math.nan):
        config = codec.config()
        config["vae_config"]["scaling_factor"] = scaling
        (path / "config.json").write_text(json.dumps({"codec": config}))
        with pytest.raises(ValueError) as error:
            load_codec(path)
        assert_one_line_naming(error, str(path / "config.json"), "vae_config.scaling_factor")
    config = codec.config()
    config["vae_config"]["latent_channels"] = "2"
    (path / "config.json").write_text(json.dumps({"codec": config}))
    with pytest.raises(ValueError) as error:
        load_codec(path)
    assert_one_line_naming(error, str(path / "config.json"), "vae_config")
    (path / "config.json").write_text('{"codec": ')
    with pytest.raises(ValueError) as error:
        load_codec(path)
    assert_one_line_naming(error, str(path / "config.json"), "not valid JSON")


@pytest.mark.parametrize("key, value, expected", [("image_size", "64", "image_size must be an int"),
                                                  ("conv_channels", [8, "8"], "conv_channels must be a list of ints"),
                                                  ("temperature_init", math.nan, "temperature_init must be a finite number"),
                                                  ("text_heads", 0, "sizes must be >= 1")])
def test_videoclip_config_damage_is_refused_naming_the_file_and_field(tmp_path, key, value, expected):
    config = VideoCLIPConfig(image_size=16, num_frames=2, conv_channels=(8, 8), frame_width=8, embed_dim=8, text_width=8,
                             text_heads=2, vocabulary=build_vocabulary(["fold the shirt"]))
    path = VideoCLIP(config, device="cpu").save_pretrained(tmp_path / "clip")
    edit_config(path, lambda c: c.__setitem__(key, value))
    with pytest.raises(ValueError) as error:
        VideoCLIP.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "config.json"), expected)
    (path / "config.json").write_text("{")
    with pytest.raises(ValueError) as error:
        VideoCLIP.from_pretrained(path, device="cpu")
    assert_one_line_naming(error, str(path / "config.json"), "not valid JSON")
