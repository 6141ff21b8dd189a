"""Codecs: exact pixel patchify, the AutoencoderKL codec and its checkpoints, `train-codec`."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from wmgym.cli import main
from wmgym.data.generate import GenerateConfig, generate
from wmgym.model.autoencoder import AutoencoderKLCodec
from wmgym.model.codec import PixelCodec
from wmgym.model.codec_factory import make_codec
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.train.codec import TrainCodecConfig, load_codec, train_codec

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


def tiny_codec(seed: int = 0) -> AutoencoderKLCodec:
    torch.manual_seed(seed)
    return AutoencoderKLCodec.small(**TINY)


def frames(n=3, size=16, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("codec") / "tiny.zarr"
    generate(GenerateConfig(out=str(path), episodes=2, resolution=32, workers=1, show_progress=False))
    return path


def tiny_train_config(store, out, **overrides) -> TrainCodecConfig:
    settings = dict(data=str(store), out=str(out), steps=30, batch_size=8, learning_rate=3e-3, warmup_steps=5,
                    latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4, val_frames=16,
                    log_every=10, checkpoint_every=1000)
    return TrainCodecConfig(**{**settings, **overrides})


# ------------------------------------------------------------------ PixelCodec
@pytest.mark.parametrize("patch", [1, 4])
def test_pixel_codec_roundtrip_is_exact(patch):
    codec = PixelCodec(patch)
    x = frames(2, 16)
    z = codec.encode(x)
    assert z.shape == (2, 3 * patch * patch, 16 // patch, 16 // patch)
    assert torch.equal(codec.decode(z), x)
    assert make_codec(codec.config()).config() == {"type": "pixel", "patch": patch}


def test_pixel_codec_rejects_frames_its_patch_does_not_divide():
    with pytest.raises(ValueError, match="downsampling factor 4"):
        PixelCodec(4).encode(frames(1, 18))


# ------------------------------------------------------------------ AutoencoderKLCodec
def test_autoencoder_codec_shapes_follow_its_downsampling_factor():
    codec = tiny_codec()
    assert (codec.latent_channels, codec.downsample) == (4, 2)
    assert AutoencoderKLCodec.small().downsample == 4  # (32, 64, 64): 64x64 -> 16x16
    with torch.no_grad():
        z = codec.encode(frames(3, 16))
        assert z.shape == (3, 4, 8, 8)
        assert codec.decode(z).shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="downsampling factor 2"):
        codec.encode(frames(1, 15))


def test_encode_is_the_normalised_posterior_mean_and_deterministic():
    codec = tiny_codec()
    codec.set_latent_statistics(scaling_factor=2.5, shift_factor=0.1)
    x = frames()
    with torch.no_grad():
        a, b = codec.encode(x), codec.encode(x)
        mean = codec.vae.encode(x).latent_dist.mean
        assert torch.equal(a, b)
        torch.testing.assert_close(a, (mean - 0.1) * 2.5)
        # decode undoes the normalisation before the VAE's decoder
        torch.testing.assert_close(codec.decode(a), codec.vae.decode(mean).sample, atol=1e-5, rtol=1e-5)


def test_config_and_state_dict_roundtrip_is_exact():
    codec = tiny_codec(seed=1)
    codec.set_latent_statistics(1.7, -0.2)
    config = json.loads(json.dumps(codec.config()))  # as config.json stores it
    assert config["type"] == "autoencoder_kl" and config["vae_config"]["scaling_factor"] == 1.7
    rebuilt = make_codec(config)
    assert rebuilt.config() == codec.config()
    rebuilt.load_state_dict(codec.state_dict())
    assert all(key.startswith("vae.") for key in rebuilt.state_dict())
    x = frames()
    with torch.no_grad():
        assert torch.equal(rebuilt.encode(x), codec.encode(x))
        assert torch.equal(rebuilt.decode(codec.encode(x)), codec.decode(codec.encode(x)))
    with pytest.raises(ValueError, match="does not take"):
        AutoencoderKLCodec.from_config({"type": "autoencoder_kl", "vae_config": {**config["vae_config"], "bogus": 1}})


def test_from_local_pretrained_matches_the_original(tmp_path):
    torch.manual_seed(2)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4,
                        scaling_factor=0.5, shift_factor=0.2)
    vae.save_pretrained(tmp_path / "vae")
    loaded = AutoencoderKLCodec.from_local_pretrained(tmp_path / "vae")
    original = AutoencoderKLCodec(vae.eval())  # from_pretrained returns eval mode; train-mode SDPA differs by ~1e-7
    x = frames()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), original.encode(x))
        assert torch.equal(loaded.decode(original.encode(x)), original.decode(original.encode(x)))
    assert (loaded.scaling_factor, loaded.shift_factor) == (0.5, 0.2)


def test_from_local_pretrained_refuses_missing_and_pickled_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*diffusion_pytorch_model.safetensors"):
        AutoencoderKLCodec.from_local_pretrained(tmp_path / "nowhere")
    tiny_codec().vae.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert (tmp_path / "pickled" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(ValueError, match="safetensors only"):
        AutoencoderKLCodec.from_local_pretrained(tmp_path / "pickled")


def test_world_model_with_autoencoder_codec_save_load_is_exact(tmp_path):
    codec = tiny_codec()
    codec.set_latent_statistics(1.3, 0.05)
    denoiser = DenoiserConfig(latent_channels=4, latent_height=8, latent_width=8, patch_size=2, width=32, depth=2, num_heads=2)
    config = WorldModelConfig(height=16, width=16, codec=codec.config(), denoiser=asdict(denoiser),
                              sampler=asdict(SamplerDefaults(num_steps=2)))
    model = WorldModel(config, device="cpu")
    model.codec.load_state_dict(codec.state_dict())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # zero-initialised output layers would make any two models agree
        for p in model.denoiser.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    loaded = WorldModel.from_pretrained(model.save_pretrained(tmp_path / "ckpt"), device="cpu")
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, size=(1, 1, 16, 16, 3), dtype=np.uint8)
    actions = rng.normal(size=(1, 2, 20)).astype(np.float32)
    a = model.rollout(context, actions, generator=torch.Generator().manual_seed(0))
    b = loaded.rollout(context, actions, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 2, 16, 16, 3) and torch.equal(a, b)


# ------------------------------------------------------------------ training
def test_train_codec_lowers_reconstruction_loss_and_writes_a_loadable_checkpoint(tiny_store, tmp_path):
    out = train_codec(tiny_train_config(tiny_store, tmp_path / "codec"))
    meta = json.loads((out / "config.json").read_text())
    log, val = meta["training"]["log"], meta["training"]["val"]
    assert [entry["step"] for entry in log] == [10, 20, 30]
    assert log[-1]["rec_loss"] < 0.8 * log[0]["rec_loss"]
    assert val[0]["step"] == 0 and val[-1]["step"] == 30 and val[-1]["psnr"] > val[0]["psnr"] + 3
    assert set(val[-1]["psnr_by_view"]) == {"camera0_rgb", "static_scene_rgb", "grippers_rgb"}
    codec = load_codec(out)
    assert torch.equal(codec.state_dict()["vae.encoder.conv_in.weight"], load_file(out / "codec.safetensors")["vae.encoder.conv_in.weight"])
    assert codec.config()["vae_config"]["scaling_factor"] == meta["codec"]["vae_config"]["scaling_factor"] != 1.0
    with torch.no_grad():  # latent statistics measured on the pooled views: ~zero mean, unit std
        z = codec.encode(torch.from_numpy(_store_views(tiny_store)).permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert abs(float(z.mean())) < 0.25 and 0.75 < float(z.std()) < 1.33
    with pytest.raises(FileExistsError, match="--resume"):
        train_codec(tiny_train_config(tiny_store, out))


def test_resumed_training_matches_uninterrupted_training(tiny_store, tmp_path):
    straight = train_codec(tiny_train_config(tiny_store, tmp_path / "straight", steps=4))
    train_codec(tiny_train_config(tiny_store, tmp_path / "resumed", steps=2))
    resumed = train_codec(tiny_train_config(tiny_store, tmp_path / "resumed", steps=4, resume=True))
    a, b = load_file(straight / "codec.safetensors"), load_file(resumed / "codec.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="block_out_channels"):
        train_codec(tiny_train_config(tiny_store, tmp_path / "resumed", steps=6, resume=True, block_out_channels=(8, 8)))


def test_cli_train_codec_runs_with_two_steps(tiny_store, tmp_path):
    out = tmp_path / "cli_codec"
    main(["train-codec", "--data", str(tiny_store), "--out", str(out), "--steps", "2", "--batch-size", "4",
          "--block-out-channels", "8", "16", "--norm-num-groups", "4", "--val-frames", "4"])
    assert load_codec(out).downsample == 2
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 2


def _store_views(path) -> np.ndarray:
    """Every camera and grippers frame and each episode's static scene, as training pools them."""
    from wmgym.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    static = store.root["data/static_scene_rgb"][[store.episode_slice(i).start for i in range(store.num_episodes)]]
    return np.concatenate([store.root["data/camera0_rgb"][:], static, store.root["data/grippers_rgb"][:]])
