"""LPIPS-to-goal reward head: how far the newest frame is, perceptually, from a goal image.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric") compares unit-normalised activations of an ImageNet trunk (AlexNet by default),
weighted per channel by linear layers fitted to human judgements. The `lpips` package ships
those linear layers; the trunk comes from torchvision, which would download it. This head never
downloads: it reads the trunk from a file the user put in torch's cache (or passes), and without
one it either refuses with a message that says where the file goes, or (opt-in) runs an
uncalibrated stand-in with a seeded random trunk.

A third kind is trained here, where no ImageNet trunk can be downloaded: `wmgym train-lpips`
(`wmgym.train.lpips_calibration`) trains LPIPS' own architecture (the same trunk and linear
heads, the same distance) so that the distance of a frame to a goal image predicts the
simulator's distance of that frame's cloth to the goal configuration (1 - fold score). The
human 2AFC judgements that calibrate real LPIPS are replaced by the reference simulator's
ground truth. `LPIPSHead(calibrated=<that directory>)` loads it; bundles ship one as `lpips/`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import lpips
import torch
import torch.nn.functional as F
import torchvision

from wmgym.model.world_model import resolve_device
from wmgym.rewards.base import RewardHead, as_frames, as_goal_images, to_unit_float

# net -> (torchvision builder, weights enum): the trunks `lpips.pretrained_networks` builds.
TRUNKS = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}
# Smallest frame side each trunk accepts: below it a pooling layer's output would be empty.
MIN_FRAME_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}
FALLBACK_SEED = 0
CALIBRATED_CONFIG, CALIBRATED_WEIGHTS = "config.json", "model.safetensors"

_warned_offline_fallback = False  # the fallback warns once per process, not once per head


def trunk_weights_url(net: str) -> str:
    """The URL torchvision downloads `net`'s ImageNet trunk from (IMAGENET1K_V1, as lpips uses)."""
    _check_net(net)
    return getattr(torchvision.models, TRUNKS[net][1]).IMAGENET1K_V1.url


def default_trunk_path(net: str) -> Path:
    """Where torchvision would cache `net`'s trunk: `<torch.hub.get_dir()>/checkpoints/<url file name>`."""
    file_name = os.path.basename(urlparse(trunk_weights_url(net)).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


class LPIPSHead(RewardHead):
    """Minus the LPIPS distance between the newest frame and a goal image.

    Frames are uint8 (b, t, H, W, 3) (only `frames[:, -1]` is used) or (b, H, W, 3); the goal
    is uint8 (H', W', 3) (shared by the batch) or (b, H', W', 3). A goal of another size than
    the frames is resized to (H, W) with `F.interpolate(mode="bilinear", antialias=True)` in
    [-1, 1] float; nothing else is resized. Frames need min(H, W) >= 31 (alex), 16 (vgg) or
    17 (squeeze).

    Arguments:
        net: LPIPS trunk, "alex" | "vgg" | "squeeze".
        trunk_weights: the torchvision ImageNet state dict of that trunk (the file at
            `trunk_weights_url(net)`); default `default_trunk_path(net)` in torch's hub cache.
            A path given here that does not exist is always an error.
        allow_offline_fallback: when the default file is missing, use a seeded random trunk
            (deterministic, but NOT calibrated LPIPS) instead of raising FileNotFoundError.
        device: "auto" (CUDA when available, else CPU), or a torch device.
        calibrated: a `wmgym train-lpips` directory (trunk and linear heads trained on the
            simulator's fold score, see the module docstring); its `net` replaces `net`, and
            `trunk_weights` / `allow_offline_fallback` must be left unset.

    Attributes:
        is_pretrained: True when the trunk holds the ImageNet weights (real LPIPS).
        trunk_weights: the file the trunk was loaded from, None for the fallback.
        calibration: "imagenet" (real LPIPS), "simulator" (`calibrated`) or "none" (the fallback).
    """

    name = "lpips"
    goal_kind = "image"

    def __init__(
        self,
        net: str = "alex",
        trunk_weights: str | os.PathLike | None = None,
        allow_offline_fallback: bool = False,
        device: str | torch.device = "auto",
        calibrated: str | os.PathLike | None = None,
    ):
        self.device = resolve_device(device)
        if calibrated is not None:
            if trunk_weights is not None or allow_offline_fallback:
                raise ValueError("calibrated= brings its own trunk: leave trunk_weights and allow_offline_fallback unset")
            self.model, self.net = load_calibrated(calibrated)
            self.model = self.model.eval().requires_grad_(False).to(self.device)
            self.is_pretrained, self.trunk_weights, self.calibration = False, None, "simulator"
            return
        _check_net(net)
        self.net = net
        path = Path(trunk_weights) if trunk_weights is not None else default_trunk_path(net)
        if not path.is_file() and (trunk_weights is not None or not allow_offline_fallback):
            raise FileNotFoundError(_missing_trunk_message(net, path, explicit=trunk_weights is not None))
        self.is_pretrained = path.is_file()
        self.trunk_weights = path if self.is_pretrained else None
        self.calibration = "imagenet" if self.is_pretrained else "none"
        model = build_lpips(net)  # the random trunk is overwritten below when the ImageNet weights are there
        if self.is_pretrained:
            _load_trunk(model, net, path)
        else:
            _warn_offline_fallback(net, path)
        self.model = model.eval().requires_grad_(False).to(self.device)

    @torch.no_grad()
    def distance(self, frames, goal) -> torch.Tensor:
        """LPIPS distance of `frames[:, -1]` to the goal -> float (b,) on `device`, 0 = identical."""
        last = as_frames(frames)[:, -1].to(self.device)  # (b, H, W, 3)
        b, height, width = last.shape[:3]
        if min(height, width) < MIN_FRAME_SIZE[self.net]:
            raise ValueError(
                f"LPIPS ({self.net}) needs frames of at least {MIN_FRAME_SIZE[self.net]} pixels a side, "
                f"got {height}x{width}"
            )
        goal = to_unit_float(as_goal_images(goal, b, self.device))  # (b, 3, H', W')
        if goal.shape[-2:] != (height, width):
            goal = F.interpolate(goal, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return self.model(to_unit_float(last), goal).reshape(b)  # lpips returns (b, 1, 1, 1)

    def score(self, frames, goal) -> torch.Tensor:
        """Minus `distance`: float (b,) on `device`, higher = closer to the goal, 0 at best."""
        return -self.distance(frames, goal)


def bundle_head(bundle, device: str | torch.device = "auto") -> LPIPSHead:
    """The calibrated LPIPS a `Bundle` ships as lpips/ (reward "lpips-calibrated"); FileNotFoundError without one."""
    if bundle.lpips_dir is None:
        raise FileNotFoundError(f"reward 'lpips-calibrated' needs a calibrated LPIPS and the bundle {bundle.directory} has no "
                                "lpips/; add one with `wmgym bundle --lpips DIR` (made by `wmgym train-lpips`)")
    return LPIPSHead(calibrated=bundle.lpips_dir, device=device)


def build_lpips(net: str = "alex") -> "lpips.LPIPS":
    """lpips.LPIPS(net) with a seeded random trunk and the package's linear heads (v0.1).

    Seeded with FALLBACK_SEED so that two builds agree and the caller's RNG stream is untouched.
    This is the offline fallback, and the starting point of `wmgym train-lpips`."""
    _check_net(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FALLBACK_SEED)
        with warnings.catch_warnings():  # lpips calls torchvision's deprecated `pretrained=`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    _load_linear_layers(model, net)
    return model


def save_calibrated(model: "lpips.LPIPS", net: str, directory: str | os.PathLike, info: dict | None = None) -> None:
    """Write an LPIPS model trained by `wmgym train-lpips` into an existing `directory`:
    config.json ({"net": net, **info}) and model.safetensors (float32; the linear heads once:
    lpips registers them twice, as lin<k> and lins.<k>)."""
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("lins.")}
    save_file(state, directory / CALIBRATED_WEIGHTS)
    (directory / CALIBRATED_CONFIG).write_text(json.dumps({"net": net, **(info or {})}, indent=2))


def load_calibrated(directory: str | os.PathLike) -> tuple["lpips.LPIPS", str]:
    """(model, net) from a `save_calibrated` directory (float32 weights, or float16 as bundles
    store them; the model is float32 either way); errors name the missing file or keys."""
    import json

    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (CALIBRATED_CONFIG, CALIBRATED_WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"no calibrated LPIPS at {directory}: {name} is missing (make one with `wmgym train-lpips`)")
    net = json.loads((directory / CALIBRATED_CONFIG).read_text()).get("net")
    if net not in TRUNKS:
        raise ValueError(f"{directory / CALIBRATED_CONFIG}: net must be one of {sorted(TRUNKS)}, got {net!r}")
    model = build_lpips(net)
    state = load_file(directory / CALIBRATED_WEIGHTS)
    expected = {k for k in model.state_dict() if not k.startswith("lins.")}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{directory / CALIBRATED_WEIGHTS} is not an LPIPS-{net} state dict (missing {missing[:4]}, unexpected {unexpected[:4]})")
    model.load_state_dict(state, strict=False)  # lins.<k> are the same modules as lin<k>; float16 (bundles) is cast to float32
    return model, net


def _check_net(net: str) -> None:
    if net not in TRUNKS:
        raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")


def _missing_trunk_message(net: str, path: Path, explicit: bool) -> str:
    url = trunk_weights_url(net)
    message = (
        f"LPIPS needs torchvision's ImageNet {TRUNKS[net][0]} weights and wmgym never downloads them. "
        f"No file at {path}. On a machine with internet, fetch {url} and copy it to {path}"
    )
    if explicit:
        return message + " (or pass trunk_weights=None to use torch's hub cache)."
    return (
        message + " (torch.hub.get_dir() decides the directory; set TORCH_HOME to move it), or pass "
        "trunk_weights=<path>. LPIPSHead(allow_offline_fallback=True) runs instead with a seeded random "
        "trunk: deterministic, but an uncalibrated metric, not LPIPS."
    )


def _warn_offline_fallback(net: str, path: Path) -> None:
    global _warned_offline_fallback
    if not _warned_offline_fallback:
        _warned_offline_fallback = True
        warnings.warn(
            f"LPIPSHead is using a seeded random {net} trunk because {path} is missing: scores are "
            f"deterministic but this is NOT real LPIPS. Put {trunk_weights_url(net)} at {path} for the real metric.",
            stacklevel=3,
        )


def _load_linear_layers(model: torch.nn.Module, net: str) -> None:
    """The human-calibrated linear layers shipped inside the lpips package (v0.1), read without pickle."""
    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    # the layers are registered twice, as lin0… and as lins.0… (the same modules)
    expected = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
    if set(state) != expected:
        raise ValueError(f"{path}: expected keys {sorted(expected)}, got {sorted(state)}")
    model.load_state_dict(state, strict=False)


def _load_trunk(model: torch.nn.Module, net: str, path: Path) -> None:
    """Load torchvision's state dict at `path` and copy its `features` into lpips' trunk slices.

    `lpips.pretrained_networks` builds `net.slice1 … net.sliceN` from torchvision's `features`,
    naming each child by its index in `features`; this copies module for module by that index
    and checks that every layer with weights was copied.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download, an HTML error page, a pickled object
        raise ValueError(f"{path} is not a readable torch state dict ({error}); fetch {trunk_weights_url(net)} again") from error
    features_state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    with torch.random.fork_rng(devices=[]):
        features = getattr(torchvision.models, TRUNKS[net][0])(weights=None).features
    try:
        features.load_state_dict(features_state)
    except RuntimeError as error:
        raise ValueError(f"{path} does not hold torchvision's {TRUNKS[net][0]} weights: {error}") from error

    copied = set()
    for index in range(1, model.net.N_slices + 1):
        for name, layer in getattr(model.net, f"slice{index}").named_children():
            layer.load_state_dict(features[int(name)].state_dict())
            copied.add(int(name))
    with_weights = {i for i, layer in enumerate(features) if any(True for _ in layer.parameters())}
    if not with_weights <= copied:
        raise RuntimeError(f"lpips' {net} trunk lacks torchvision layers {sorted(with_weights - copied)}")
