"""The world model core: causality, cached sampling, guidance, checkpoints (tiny configs)."""

from dataclasses import asdict

import numpy as np
import pytest
import torch

from conftest import as_conditions
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.kv_cache import KVCache
from wmgym.model.schedule import noise_level_matrix, sampling_timesteps
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig

SIZE = 16


def tiny_config(prediction: str = "v", **sampler) -> WorldModelConfig:
    denoiser = DenoiserConfig(latent_channels=3, latent_height=SIZE, latent_width=SIZE, patch_size=4, width=32, depth=2, num_heads=2)
    return WorldModelConfig(height=SIZE, width=SIZE, denoiser=asdict(denoiser), sampler=asdict(SamplerDefaults(num_steps=3, **sampler)),
                            prediction=prediction)


def randomized(model: WorldModel, seed: int = 0) -> WorldModel:
    """Zero-initialised output layers make a fresh model predict v = 0 everywhere, which
    would pass any equality test; give every parameter random values first."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def random_inputs(b=2, c=1, horizon=16, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(b, c, SIZE, SIZE, 3), dtype=np.uint8)
    actions = rng.normal(size=(b, horizon, 20)).astype(np.float32)
    return frames, actions


def test_future_frames_do_not_change_past_outputs():
    torch.manual_seed(0)
    denoiser = randomized(WorldModel(tiny_config(), device="cpu")).denoiser
    x = torch.randn(2, 6, 3, SIZE, SIZE)
    timesteps = torch.randint(0, 1000, (2, 6))
    actions = torch.randn(2, 6, 20)
    before = denoiser(x, timesteps, actions)
    x2, t2, a2 = x.clone(), timesteps.clone(), actions.clone()
    x2[:, 4:] = torch.randn_like(x2[:, 4:])
    t2[:, 4:] = torch.randint(0, 1000, (2, 2))
    a2[:, 4:] = torch.randn_like(a2[:, 4:])
    after = denoiser(x2, t2, a2)
    torch.testing.assert_close(after[:, :4], before[:, :4], atol=1e-5, rtol=0)
    assert (after[:, 4:] - before[:, 4:]).abs().max() > 1e-3  # the changed frames did change


def test_cached_forward_matches_full_forward():
    denoiser = randomized(WorldModel(tiny_config(), device="cpu")).denoiser
    x = torch.randn(1, 5, 3, SIZE, SIZE)
    timesteps = torch.randint(0, 1000, (1, 5))
    actions = torch.randn(1, 5, 20)
    full = denoiser(x, timesteps, actions)
    cache = KVCache(denoiser.config.depth, denoiser.config.tokens_per_frame)
    denoiser(x[:, :3], timesteps[:, :3], actions[:, :3], cache=cache, write_cache=True)
    assert cache.num_frames == 3
    tail = denoiser(x[:, 3:], timesteps[:, 3:], actions[:, 3:], cache=cache, previous_first=x[:, 2:3])
    torch.testing.assert_close(tail, full[:, 3:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prediction", ["v", "residual"])
def test_cached_rollout_matches_recompute(prediction):
    model = randomized(WorldModel(tiny_config(prediction, window_frames=None), device="cpu"))
    frames, actions = random_inputs(horizon=16)
    cached = model.rollout(frames, actions, generator=torch.Generator().manual_seed(3), use_cache=True)
    recomputed = model.rollout(frames, actions, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert cached.shape == (2, 16, SIZE, SIZE, 3) and cached.dtype == torch.uint8
    # uint8 rounding can flip a value sitting on a rounding boundary by one level.
    assert (cached.int() - recomputed.int()).abs().max() <= 1


def test_same_seed_same_rollout_and_other_seed_differs():
    model = randomized(WorldModel(tiny_config(), device="cpu"))
    frames, actions = random_inputs(horizon=4)
    a = model.rollout(frames, actions, generator=torch.Generator().manual_seed(1))
    b = model.rollout(frames, actions, generator=torch.Generator().manual_seed(1))
    c = model.rollout(frames, actions, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bf16_precision_is_deterministic_close_to_fp32_and_checked():
    model = randomized(WorldModel(tiny_config(), device="cpu")).eval()
    frames, actions = random_inputs(horizon=4)
    roll = lambda: model.rollout(frames, actions, generator=torch.Generator().manual_seed(0)).float()
    full = roll()
    assert model.set_precision("bf16") is model and model.sampler.precision == "bf16"
    half = roll()
    assert torch.equal(half, roll())  # deterministic on a fixed device
    assert not torch.equal(half, full)  # it did compute in bfloat16 ...
    assert (half - full).abs().mean() < 2.0  # ... and rounding moves a pixel by about a level, not more
    with pytest.raises(ValueError, match="precision must be one of"):
        model.set_precision("fp16")
    assert SamplerDefaults().precision == "fp32"  # checkpoints without the key load as before
    with pytest.raises(ValueError, match="precision"):
        SamplerDefaults(precision="int8")


def test_auto_precision_is_bf16_for_large_batches_where_the_device_computes_it_natively(monkeypatch):
    import wmgym.model.world_model as world_model

    model = randomized(WorldModel(tiny_config(), device="cpu")).eval().set_precision("auto")
    rows = world_model.AUTO_BF16_MIN_ROWS
    frames, actions = random_inputs(b=rows, horizon=3)
    roll = lambda: model.rollout(frames, actions, generator=torch.Generator().manual_seed(0))
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(world_model, "computes_bf16_natively", lambda device, native=native: native)
        assert model.compute_precision(rows) == expected and model.compute_precision(rows - 1) == "fp32"
        auto = roll()
        model.set_precision(expected)
        assert torch.equal(auto, roll())  # auto draws exactly what the precision it resolved to draws
        model.set_precision("auto")


def test_guidance_scale_one_equals_conditional():
    model = randomized(WorldModel(tiny_config(), device="cpu"))
    frames, actions = random_inputs(horizon=4)
    plain = model.rollout(frames, actions, guidance_scale=1.0, generator=torch.Generator().manual_seed(5))
    # Guidance 1 through the batched two-branch path: v_u + 1 * (v_c - v_u) = v_c.
    model.sampler.guidance_scale = 1.0 + 1e-9
    branched = model.rollout(frames, actions, generator=torch.Generator().manual_seed(5))
    assert (plain.int() - branched.int()).abs().max() <= 1
    guided = model.rollout(frames, actions, guidance_scale=3.0, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(plain, guided)


def test_sliding_window_bounds_cache_memory():
    model = randomized(WorldModel(tiny_config(window_frames=4), device="cpu"))
    frames, actions = random_inputs(b=1, horizon=10)
    out = model.rollout(frames, actions, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 10, SIZE, SIZE, 3)
    cache = KVCache(2, 16, max_frames=4, keep_first_frame=True)
    for frame in range(10):
        k = torch.full((1, 2, 16, 8), float(frame))
        cache.append(0, k, k)
    assert cache.num_frames == 4
    kept = cache.keys[0][0, 0, ::16, 0].tolist()
    assert kept == [0.0, 7.0, 8.0, 9.0]  # the first frame and the three newest


def test_cache_only_pass_writes_the_same_cache_and_needs_write_cache():
    den = randomized(WorldModel(tiny_config(), device="cpu")).denoiser
    x, timesteps, actions = torch.randn(2, 3, 3, SIZE, SIZE), torch.randint(0, 1000, (2, 3)), torch.randn(2, 3, 20)
    full, lean = KVCache(2, den.config.tokens_per_frame, 4, True), KVCache(2, den.config.tokens_per_frame, 4, True)
    for i in range(3):  # the third pass slides the window
        den(x[:, i : i + 1], timesteps[:, i : i + 1], actions[:, i : i + 1], cache=full, write_cache=True)
        assert den(x[:, i : i + 1], timesteps[:, i : i + 1], actions[:, i : i + 1], cache=lean, write_cache=True, return_output=False) is None
    for layer in range(2):
        for a, b in zip(full.get(layer), lean.get(layer)):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="must write the cache"):
        den(x[:, :1], timesteps[:, :1], actions[:, :1], cache=lean, return_output=False)


def test_window_slices_equal_the_per_row_gather():
    # Rows that keep the same slots take the slicing path; a restarted row forces the per-row
    # gather for the same pass. Both must keep exactly the slots the window plan names.
    def filled(restart: bool):
        cache = KVCache(1, 2, max_frames=3, keep_first_frame=True)
        for frame in range(5):
            k = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 1, 2, 1) + 100 * frame  # row r: 100 frame + r
            cache.append(0, k, -k)
            if restart and frame == 1:
                cache.append_rows(torch.tensor([1]), fresh)
        return cache
    fresh = KVCache(1, 2, max_frames=3, keep_first_frame=True)
    fresh.append(0, torch.full((1, 1, 2, 1), -7.0), torch.full((1, 1, 2, 1), 7.0))
    shared, restarted = filled(False), filled(True)
    frames = lambda cache, row: cache.get(0)[0][row, 0, ::2, 0].tolist()
    assert frames(shared, 0) == [0.0, 300.0, 400.0] and frames(shared, 1) == [1.0, 301.0, 401.0]  # first and two newest
    assert frames(restarted, 0) == [0.0, 300.0, 400.0]  # the same slots through the gather
    valid = restarted.valid[1].tolist() if restarted.valid is not None else [True] * restarted.num_frames
    kept_row1 = [v for v, ok in zip(frames(restarted, 1), valid) if ok]
    assert kept_row1 == [-7.0, 301.0, 401.0]  # the restarted row: its new start frame and its two newest
    torch.testing.assert_close(shared.get(0)[1], -shared.get(0)[0])  # values follow their keys


def test_save_load_roundtrip_is_exact(tmp_path):
    model = randomized(WorldModel(tiny_config(), device="cpu"))
    path = model.save_pretrained(tmp_path / "ckpt")
    loaded = WorldModel.from_pretrained(path, device="cpu")
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    frames, actions = random_inputs(horizon=3)
    a = model.rollout(frames, actions, generator=torch.Generator().manual_seed(0))
    b = loaded.rollout(frames, actions, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_loading_bad_checkpoints_fails_clearly(tmp_path):
    model = WorldModel(tiny_config(), device="cpu")
    path = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        WorldModel.from_pretrained(tmp_path / "nowhere")
    (path / "denoiser.safetensors").rename(path / "denoiser.bin")
    with pytest.raises(FileNotFoundError, match="missing denoiser.safetensors.*never pickles"):
        WorldModel.from_pretrained(path)
    (path / "denoiser.bin").write_bytes(b"not a safetensors file")
    (path / "denoiser.bin").rename(path / "denoiser.safetensors")
    with pytest.raises(ValueError, match="denoiser.safetensors is not a readable safetensors file"):
        WorldModel.from_pretrained(path)
    bigger = tiny_config()
    bigger.denoiser["width"] = 48
    WorldModel(bigger, device="cpu").save_pretrained(tmp_path / "wide")
    (tmp_path / "wide" / "config.json").write_text(WorldModel(tiny_config(), device="cpu").save_pretrained(tmp_path / "small").joinpath("config.json").read_text())
    with pytest.raises(ValueError, match="has shape"):
        WorldModel.from_pretrained(tmp_path / "wide")


def test_bad_rollout_inputs_raise():
    model = WorldModel(tiny_config(), device="cpu")
    frames, actions = random_inputs(horizon=2)
    with pytest.raises(ValueError, match="20"):
        model.rollout(frames, actions[..., :19])
    bad = actions.copy()
    bad[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.rollout(frames, bad)
    with pytest.raises(ValueError, match="frames must be uint8"):
        model.rollout(np.zeros((2, 1, 32, 32, 3), np.uint8), actions)


def test_noise_level_matrix_shape_and_order():
    m = noise_level_matrix(num_frames=4, num_context=1, num_steps=3, history_timestep=20)
    steps = sampling_timesteps(3)
    assert m.shape == (3 * 3, 4)
    assert m[:, 0].eq(20).all()  # context held at the history level
    assert m[:3, 1].tolist() == steps[:-1].tolist() and m[:3, 2:].eq(-1).all()  # frame 1 denoised first
    assert m[3:, 1].eq(20).all()  # then it joins the history


class _OracleDenoiser(torch.nn.Module):
    """Returns the exact v that leads every frame to `target` (b, 1, C, h, w) latents."""

    def __init__(self, target, alphas_cumprod, config):
        super().__init__()
        self.target, self.alphas_cumprod, self.config = target, alphas_cumprod, config

    def forward(self, noisy, timesteps, *args, **kwargs):
        a = self.alphas_cumprod[timesteps.clamp(min=0)].reshape(*timesteps.shape, 1, 1, 1)
        eps = (noisy - a.sqrt() * self.target) / (1 - a).clamp(min=1e-12).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * self.target


@pytest.mark.parametrize("num_steps", [1, 4, 8])
def test_sampler_driven_by_true_velocity_reproduces_the_target(num_steps):
    model = WorldModel(tiny_config(), device="cpu")
    frames, actions = random_inputs(b=1, horizon=3)
    target_frame = np.random.default_rng(1).integers(0, 256, size=(1, 1, SIZE, SIZE, 3), dtype=np.uint8)
    target = model.encode_frames(target_frame)
    model.denoiser = _OracleDenoiser(target, model.alphas_cumprod, model.denoiser.config)
    out = model.rollout(frames, actions, num_steps=num_steps, generator=torch.Generator().manual_seed(0))
    assert (out.int() - torch.from_numpy(target_frame).int()).abs().max() <= 1


class _OracleResidualDenoiser(torch.nn.Module):
    """Returns target - predecessor: the residual output that leads the first frame to `target`."""

    def __init__(self, target, previous_clean, config):
        super().__init__()
        self.target, self.previous_clean, self.config = target, previous_clean, config

    def forward(self, noisy, timesteps, *args, **kwargs):
        return self.target - self.previous_clean  # set by the test: the clean last context frame


@pytest.mark.parametrize("num_steps", [1, 4])
def test_sampler_driven_by_true_residual_reproduces_the_target(num_steps):
    model = WorldModel(tiny_config("residual"), device="cpu")
    frames, actions = random_inputs(b=1, horizon=1)
    target_frame = np.random.default_rng(1).integers(0, 256, size=(1, 1, SIZE, SIZE, 3), dtype=np.uint8)
    model.denoiser = _OracleResidualDenoiser(model.encode_frames(target_frame), model.encode_frames(frames), model.denoiser.config)
    out = model.rollout(frames, actions, num_steps=num_steps, generator=torch.Generator().manual_seed(0))
    assert (out.int() - torch.from_numpy(target_frame).int()).abs().max() <= 1


def test_untrained_residual_model_copies_the_last_frame():
    # Zero-initialised output layers: a fresh residual model predicts "no change", i.e. it
    # starts exactly at the copy-last-frame baseline.
    model = WorldModel(tiny_config("residual"), device="cpu")
    frames, actions = random_inputs(b=2, c=2, horizon=4)
    out = model.rollout(frames, actions, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    last = frames[:, -1:].astype(np.float64)
    assert np.abs(out - last).max() <= 1
    untrained_v = WorldModel(tiny_config("v"), device="cpu")  # v = 0 gives the mean frame instead
    out_v = untrained_v.rollout(frames, actions, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    assert 10 * np.log10(255.0**2 / ((out_v - last) ** 2).mean()) < 15


def test_residual_prediction_needs_the_previous_frame():
    config = tiny_config("residual")
    config.denoiser["use_previous_frame"] = False
    with pytest.raises(ValueError, match="use_previous_frame"):
        WorldModel(config, device="cpu")
    with pytest.raises(ValueError, match="prediction must be one of"):
        WorldModel(tiny_config("eps"), device="cpu")


@pytest.mark.parametrize("keep_first_frame", [True, False])
@pytest.mark.parametrize("steps_after", [0, 2, 4])
def test_restarted_cache_row_matches_a_fresh_cache(keep_first_frame, steps_after):
    # Row 1 restarts from frame S after the window has slid; its next prediction must equal
    # that of a one-row cache holding S and the same later frames (same keys, same positions).
    model = randomized(WorldModel(tiny_config(window_frames=4, keep_first_frame=keep_first_frame), device="cpu"))
    den, cfg = model.denoiser, model.denoiser.config
    g = torch.Generator().manual_seed(0)
    latent = lambda b: torch.randn(b, 1, 3, SIZE, SIZE, generator=g)
    level = lambda b: torch.full((b, 1), 20, dtype=torch.long)
    act = lambda b: torch.randn(b, 1, 20, generator=g)
    no_drop = lambda b: torch.zeros(b, 1, dtype=torch.bool)
    new_cache = lambda: KVCache(cfg.depth, cfg.tokens_per_frame, 4, keep_first_frame)
    batched = new_cache()
    for _ in range(6):  # more frames than the window holds
        den(latent(3), level(3), act(3), no_drop(3), cache=batched, write_cache=True)
    start = latent(1)
    fresh_rows = new_cache()
    den(start, level(1), act(1), torch.ones(1, 1, dtype=torch.bool), cache=fresh_rows, write_cache=True)
    batched.append_rows(torch.tensor([1]), fresh_rows)
    single = new_cache()
    den(start, level(1), act(1) * 0, torch.ones(1, 1, dtype=torch.bool), cache=single, write_cache=True)
    for _ in range(steps_after):  # 4: the restarted row's own window slides too
        frames, actions = latent(3), act(3)
        den(frames, level(3), actions, no_drop(3), cache=batched, write_cache=True)
        den(frames[1:2], level(1), actions[1:2], no_drop(1), cache=single, write_cache=True)
    query, actions = latent(3), act(3)
    out_batched = den(query, level(3), actions, no_drop(3), cache=batched)
    out_single = den(query[1:2], level(1), actions[1:2], no_drop(1), cache=single)
    torch.testing.assert_close(out_batched[1:2], out_single, atol=1e-5, rtol=1e-4)
    assert batched.num_frames <= 4 + 1  # the window bounds memory per row (plus one invalid pad at most)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_restarting_a_row_leaves_the_other_rows_unchanged(precision):
    from wmgym.model.imagination import Imagination

    model = randomized(WorldModel(tiny_config(window_frames=3), device="cpu")).set_precision(precision)
    frames, actions = random_inputs(b=3, horizon=6)
    restart_frame = random_inputs(b=1, seed=5)[0]
    runs = []
    for restart in (False, True):
        imagination, g = Imagination(model, 3), torch.Generator().manual_seed(1)
        imagination.start(frames, generator=g)
        out = []
        for i in range(6):
            if restart and i == 3:
                imagination.start(restart_frame, rows=[1], generator=torch.Generator().manual_seed(9))
            out.append(model.decode_latents(imagination.step(actions[:, i], g)))
        runs.append(torch.cat(out, dim=1))
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        assert all(k.dtype == v.dtype == dtype for layer in range(2) for k, v in [imagination.cache.get(layer)])  # restart included
    plain, restarted = runs
    assert torch.equal(plain[[0, 2]], restarted[[0, 2]])
    assert torch.equal(plain[1, :3], restarted[1, :3]) and not torch.equal(plain[1, 3:], restarted[1, 3:])


def test_actions_are_clamped_to_the_training_range():
    from dataclasses import replace

    low, high = [-0.1] * 20, [0.1] * 20
    model = WorldModel(replace(tiny_config(), action_min=low, action_max=high), device="cpu")
    inside = torch.full((1, 2, 20), 0.05)
    assert torch.equal(model.normalize_actions(inside), inside / 1.0)  # mean 0, std 1: in range, untouched
    far = torch.full((1, 2, 20), 50.0)
    torch.testing.assert_close(model.normalize_actions(far), torch.full((1, 2, 20), 0.1))
    unclamped = WorldModel(tiny_config(), device="cpu")
    assert torch.equal(unclamped.normalize_actions(far), far)  # no range in the config: no clamp
    with pytest.raises(ValueError, match="come together"):
        WorldModel(replace(tiny_config(), action_min=low), device="cpu")


def test_gripper_region_weights_mark_the_grown_gripper_mask_on_the_latent_grid():
    from wmgym.model.world_model import gripper_region_weights

    view = torch.zeros(1, 2, SIZE, SIZE, 3, dtype=torch.uint8)
    view[0, 0, 5, 5, 1] = 8  # one gripper pixel in frame 0; frame 1 shows no gripper
    pixels = gripper_region_weights(view, (SIZE, SIZE), weight=3.0, dilation=1)
    assert pixels.shape == (1, 2, 1, SIZE, SIZE)
    expected = torch.ones(SIZE, SIZE)
    expected[4:7, 4:7] = 4.0  # the pixel grown by one, weighted 1 + 3
    assert torch.equal(pixels[0, 0, 0], expected) and torch.equal(pixels[0, 1], torch.ones(1, SIZE, SIZE))
    latent = gripper_region_weights(view, (4, 4), weight=3.0, dilation=1)  # 4x4 pixels a latent cell
    cells = torch.ones(4, 4)
    cells[1, 1] = 4.0  # pixels 4..6 lie in cell 1 of both axes
    assert torch.equal(latent[0, 0, 0], cells)
    with pytest.raises(ValueError, match=">= 0"):
        gripper_region_weights(view, (4, 4), weight=-1.0)


def test_gripper_weight_counts_the_error_near_a_gripper_one_plus_w_times():
    from wmgym.train.wm_build import with_condition_views

    model = randomized(with_condition_views(WorldModel(tiny_config(), device="cpu"), ("grippers",)))
    frames = torch.randint(0, 256, (2, 3, SIZE, SIZE, 3), dtype=torch.uint8)
    actions = torch.zeros(2, 2, 20)
    views = torch.zeros(2, 3, 1, SIZE, SIZE, 3, dtype=torch.uint8)
    views[..., :4, :4, :] = 50  # a gripper in the top-left 4x4 corner of every frame
    z0 = model.encode_frames(frames)
    error = torch.zeros_like(z0)
    error[..., :4, :4] = 1.0  # the prediction is wrong exactly there, by 1
    model.predicted_x0 = lambda output, noisy, timesteps, previous: z0 + error

    def loss(**kw):
        return model.compute_loss(frames, actions, as_conditions(views), generator=torch.Generator().manual_seed(0), **kw)[0]

    plain, weighted = loss(), loss(gripper_weight=3.0, gripper_dilation=0)
    region, total = 16, SIZE * SIZE
    ratio = (4 * region / (4 * region + total - region)) / (region / total)  # weighted mean / plain mean per frame
    torch.testing.assert_close(weighted / plain, torch.tensor(ratio), rtol=1e-5, atol=0)
    assert torch.equal(loss(gripper_weight=0.0), plain)
    with pytest.raises(ValueError, match="grippers"):
        randomized(WorldModel(tiny_config(), device="cpu")).compute_loss(frames, actions, gripper_weight=1.0)



def pose_model(seed: int = 0, pose_input: str = "embedding") -> WorldModel:
    """A randomized tiny model conditioned on the grippers' pose vector only (no views), read
    through its embedding or as condition channels (`DenoiserConfig.vector_dim`)."""
    from wmgym.model.world_model_config import pose_vector_spec
    from wmgym.train.wm_build import POSE_DIM

    config = tiny_config(prediction="residual")
    config.denoiser = {**config.denoiser, "condition_channels": POSE_DIM,
                       "vector_dim": POSE_DIM if pose_input == "embedding" else 0}
    config.condition_vectors = {"poses": pose_vector_spec([0.0, -0.2, 0.1, 0.04] * 2, [0.2, 0.2, 0.1, 0.03] * 2)}
    return randomized(WorldModel(config, device="cpu"), seed)


@pytest.mark.parametrize("pose_input", ["embedding", "channels"])
def test_pose_conditioned_rollout_depends_on_the_pose_and_matches_the_uncached_reference(pose_input):
    model = pose_model(pose_input=pose_input)
    assert (model.denoiser.vector_embed is not None) == (pose_input == "embedding")
    assert (model.denoiser.condition_in is None) == (pose_input == "embedding")  # no views: nothing else to project
    frames, actions = random_inputs(b=2, c=2, horizon=4)
    poses = np.random.default_rng(1).normal(size=(2, 6, 8)).astype(np.float32) * 0.1
    run = lambda p, **kw: model.rollout(frames, actions, generator=torch.Generator().manual_seed(0), conditions=as_conditions(poses=p), **kw)
    cached = run(poses)
    assert (cached.int() - run(poses, use_cache=False).int()).abs().max() <= 1  # uint8 rounding: at most one level apart
    moved = poses.copy()
    moved[:, 4:, 2] += 0.05  # the grippers 5 cm higher from frame 4 on
    other = run(moved)
    assert torch.equal(other[:, :2], cached[:, :2]) and not torch.equal(other[:, 2:], cached[:, 2:])  # causal in the pose too


def test_pose_inputs_are_checked():
    model = pose_model()
    frames, actions = random_inputs(b=2, c=1, horizon=3)
    with pytest.raises(ValueError, match="pass poses"):
        model.rollout(frames, actions)
    with pytest.raises(ValueError, match="poses must be"):
        model.rollout(frames, actions, conditions=as_conditions(poses=np.zeros((2, 3, 8), np.float32)))  # c + T = 4 frames
    with pytest.raises(ValueError, match="poses must be"):
        model.rollout(frames, actions, conditions=as_conditions(poses=np.full((2, 4, 8), np.nan, np.float32)))
    plain = randomized(WorldModel(tiny_config(), device="cpu"))
    with pytest.raises(ValueError, match="not pose-conditioned"):
        plain.rollout(frames, actions, conditions=as_conditions(poses=np.zeros((2, 4, 8), np.float32)))
    bad = tiny_config()
    bad.condition_vectors = {"poses": {"size": 8, "mean": [0.0] * 8}}  # a mean without its std
    with pytest.raises(ValueError, match="needs keys size, mean, std"):
        WorldModel(bad, device="cpu")
    part = pose_model().config
    part.denoiser = {**part.denoiser, "vector_dim": 4}
    with pytest.raises(ValueError, match="vector_dim must be 0 or the frame vector's 8"):  # the embedding reads the whole pose or none of it
        WorldModel(part, device="cpu")
    part.denoiser = {**part.denoiser, "vector_dim": 9}
    with pytest.raises(ValueError, match=r"vector_dim 9 must be in \[0, condition_channels=8\]"):
        WorldModel(part, device="cpu")


def test_pose_conditioned_model_saves_and_loads_its_pose_statistics(tmp_path):
    model = pose_model()
    model.save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.is_pose_conditioned and loaded.config.condition_vectors == model.config.condition_vectors
    frames, actions = random_inputs(b=1, c=1, horizon=2)
    poses = np.zeros((1, 3, 8), np.float32)
    run = lambda m: m.rollout(frames, actions, generator=torch.Generator().manual_seed(0), conditions=as_conditions(poses=poses))
    assert torch.equal(run(model), run(loaded))
