"""Shared test fixtures."""

from dataclasses import asdict

import pytest
import torch

from wmgym.envs.bundle import make_bundle
from wmgym.model.conditions import Conditions
from wmgym.model.denoiser import DenoiserConfig
from wmgym.model.world_model import SamplerDefaults, WorldModel, WorldModelConfig
from wmgym.model.world_model_config import pose_vector_spec
from wmgym.train.wm_build import POSE_DIM
from wmgym.rewards.videoclip import VideoCLIP, VideoCLIPConfig, build_vocabulary
from wmgym.sim.tasks import TASKS, make_task

SIZE = 64


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads crawl (and stall) when another job
    holds one of the machine's two cores. Restores the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def as_conditions(views=None, poses=None, held=None, view_names: tuple = ("grippers",)) -> Conditions:
    """`Conditions` out of stacked views (b, t, V, H, W, 3), named `view_names`, a "poses" and a
    "held" vector (b, t, d); whichever is given."""
    named = {} if views is None else {name: views[:, :, i] for i, name in enumerate(view_names)}
    return Conditions(named, {k: v for k, v in (("poses", poses), ("held", held)) if v is not None})


def tiny_world_model(seed: int = 0, condition_views: tuple = (), pose: bool = False) -> WorldModel:
    """64x64 pixels, 16 tokens a frame, residual prediction with small random output weights
    (so frames change with the actions -- and with the condition views and pose, if any -- but
    stay near the start frame)."""
    denoiser = DenoiserConfig(latent_channels=3, latent_height=SIZE, latent_width=SIZE, patch_size=16, width=32, depth=1, num_heads=2,
                              condition_channels=3 * len(condition_views) + (POSE_DIM if pose else 0),
                              vector_dim=POSE_DIM if pose else 0)  # the pose through its embedding, as train-wm makes it
    stats = {"condition_vectors": {"poses": pose_vector_spec([0.0, -0.2, 0.1, 0.04] * 2, [0.2, 0.2, 0.1, 0.03] * 2)}} if pose else {}
    config = WorldModelConfig(height=SIZE, width=SIZE, denoiser=asdict(denoiser), prediction="residual",
                              sampler=asdict(SamplerDefaults(num_steps=2, window_frames=4)), condition_views=tuple(condition_views),
                              **stats)
    model = WorldModel(config, device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def tiny_grasp_prior(bias: float = 0.0):
    """A `GraspPrior` whose output is `bias` plus small random weights: p(held) ~ sigmoid(bias)."""
    from wmgym.model.grasp_prior import GraspPrior, GraspPriorConfig

    torch.manual_seed(0)
    prior = GraspPrior(GraspPriorConfig(hidden=8, feature_mean=[0.0] * 18, feature_std=[1.0] * 18))
    with torch.no_grad():
        prior.net[-1].weight.mul_(0.01)
        prior.net[-1].bias.fill_(bias)
    return prior


def _tiny_bundle(root, condition_views: tuple = (), pose: bool = False, held_bias: float | None = None):
    model = tiny_world_model(condition_views=condition_views, pose=pose)
    if held_bias is not None:  # a held-conditioned model whose grasp state visibly matters, with its prior
        from wmgym.train.wm_build import with_held_conditioning

        model = with_held_conditioning(model)
        with torch.no_grad():
            model.denoiser.vector_embed[2].weight.normal_(0, 0.5)
        model.grasp_prior = tiny_grasp_prior(held_bias)
    model.save_pretrained(root / "wm")
    captions = [make_task(t).caption for t in TASKS]
    clip = VideoCLIP(VideoCLIPConfig(num_frames=4, conv_channels=(8, 8), frame_width=16, embed_dim=16, text_width=16,
                                     vocabulary=build_vocabulary(captions + ["the shirt is not folded yet"]),
                                     task_captions={t: make_task(t).caption for t in TASKS},
                                     success_threshold=1.0), device="cpu")  # untrained: the judge never fires unless told
    clip.save_pretrained(root / "clip")
    return make_bundle(root / "bundle", root / "wm", root / "clip", num_start_frames=3)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A WMFold bundle with tiny untrained models at 64x64 and a bank of 3 start states."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def tiny_grippers_bundle(tmp_path_factory):
    """As `tiny_bundle`, with a world model conditioned on the grippers view."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle_grippers"), condition_views=("grippers",))


@pytest.fixture(scope="session")
def tiny_pose_bundle(tmp_path_factory):
    """As `tiny_grippers_bundle`, with a world model also conditioned on the grippers' pose vector."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle_pose"), condition_views=("grippers",), pose=True)


@pytest.fixture(scope="session")
def tiny_held_bundle(tmp_path_factory):
    """As `tiny_grippers_bundle`, with a world model also conditioned on the grasp state, whose
    grasp prior says every closing holds (p = sigmoid(20))."""
    return _tiny_bundle(tmp_path_factory.mktemp("bundle_held"), condition_views=("grippers",), held_bias=20.0)
