"""Causal conversion of temporal convolutions (the seed's [w0, w1, w2] -> [0, w0 - w2, w1 + 2 w2])."""

import pytest
import torch
from diffusers import UNet3DConditionModel, UNetSpatioTemporalConditionModel
from diffusers.models.resnet import TemporalConvLayer, TemporalResnetBlock
from torch import nn

from wmgym.model.causal_conv import (
    CAUSAL_MODES,
    CausalTemporalConv3d,
    causalize_temporal_convs,
    causalize_temporal_kernel,
)


def random_conv(kernel=(3, 3, 3), padding=(1, 1, 1), seed=0, **kwargs):
    torch.manual_seed(seed)
    conv = nn.Conv3d(4, 6, kernel, padding=padding, **kwargs)
    nn.init.normal_(conv.weight, std=0.3)
    nn.init.normal_(conv.bias, std=0.3)
    return conv


# --- kernel maps ---------------------------------------------------------------------------


def test_kernel_maps_on_a_hand_example():
    w = torch.tensor([1.0, 2.0, 3.0])
    # extrapolative: [0, w0 - w2, w1 + 2 w2] = [0, 1 - 3, 2 + 6]
    assert causalize_temporal_kernel(w).tolist() == [0.0, -2.0, 8.0]
    assert causalize_temporal_kernel(w, "masked").tolist() == [0.0, 1.0, 2.0]
    assert causalize_temporal_kernel(w, "shift").tolist() == [1.0, 2.0, 3.0]


def test_conv3d_weight_is_converted_along_axis_2_keeping_dtype():
    weight = torch.zeros(2, 1, 3, 1, 2, dtype=torch.float64)
    weight[0, 0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    weight[1, 0, :, 0, 1] = torch.tensor([-1.0, 0.5, 4.0])
    causal = causalize_temporal_kernel(weight)
    assert causal.shape == weight.shape and causal.dtype == torch.float64
    assert causal[0, 0, :, 0, 0].tolist() == [0.0, -2.0, 8.0]
    assert causal[1, 0, :, 0, 1].tolist() == [0.0, -5.0, 8.5]
    assert causal[0, 0, :, 0, 1].abs().sum() == 0 and causal[1, 0, :, 0, 0].abs().sum() == 0


def test_unknown_mode_and_wrong_kernel_size_raise():
    with pytest.raises(ValueError, match="extrapolative.*masked.*shift"):
        causalize_temporal_kernel(torch.ones(3), "zero")
    with pytest.raises(ValueError, match="size 3"):
        causalize_temporal_kernel(torch.ones(5))
    with pytest.raises(ValueError, match="size 3"):
        causalize_temporal_kernel(torch.ones(2, 2, 5, 1, 1))
    with pytest.raises(ValueError, match="extrapolative"):
        causalize_temporal_convs(nn.Sequential(random_conv()), mode="future")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kernel=(5, 1, 1), padding=(2, 0, 0)), "temporal kernel 5"),
        (dict(stride=(2, 1, 1)), "temporal stride 2"),
        (dict(padding=(0, 1, 1)), "temporal padding 0"),
        (dict(padding_mode="replicate"), "padding_mode"),
    ],
)
def test_from_conv_rejects_unsupported_convs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CausalTemporalConv3d.from_conv(random_conv(**kwargs))


# --- the causal conv -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", CAUSAL_MODES)
def test_no_future_leakage(mode):
    conv = random_conv()
    causal = CausalTemporalConv3d.from_conv(conv, mode)
    x = torch.randn(2, 4, 7, 5, 5)
    out = causal(x)
    leaked_before = False
    for t in range(6):
        changed = x.clone()
        changed[:, :, t + 1 :] = torch.randn_like(changed[:, :, t + 1 :])
        assert torch.equal(causal(changed)[:, :, : t + 1], out[:, :, : t + 1]), f"frame <= {t} saw the future"
        leaked_before |= not torch.equal(conv(changed)[:, :, : t + 1], conv(x)[:, :, : t + 1])
    assert leaked_before  # the symmetric original does see the future, so the check can fail


def test_extrapolative_equals_original_on_linear_signals():
    conv = random_conv().double()  # float64: the identity is exact, so only rounding is tolerated
    num_frames = 6
    torch.manual_seed(1)
    a, b = torch.randn(2, 4, 1, 5, 5, dtype=torch.float64), torch.randn(2, 4, 1, 5, 5, dtype=torch.float64)
    x = a + b * torch.arange(num_frames, dtype=torch.float64).view(1, 1, -1, 1, 1)  # (b, c, t, h, w)
    with torch.no_grad():
        original = conv(x)
        extrapolative = CausalTemporalConv3d.from_conv(conv)(x)
        masked = CausalTemporalConv3d.from_conv(conv, "masked")(x)
    # Frames 1 .. T-2: every tap reads a real frame, and x_{t+1} = 2 x_t - x_{t-1} exactly.
    torch.testing.assert_close(extrapolative[:, :, 1:-1], original[:, :, 1:-1], atol=1e-5, rtol=0)
    # Frame 0: both read a zero x_{-1}, which is not the extrapolation a - b. Frame T-1: the
    # original reads a zero x_T where the causal conv uses the extrapolation 2 x_{T-1} - x_{T-2}.
    for t in (0, num_frames - 1):
        assert (extrapolative[:, :, t] - original[:, :, t]).abs().max() > 1e-2
    assert (masked[:, :, 1:-1] - original[:, :, 1:-1]).abs().max() > 1e-2  # zeroing w2 is not exact


def test_extrapolative_error_is_w2_times_second_difference():
    conv = random_conv(kernel=(3, 1, 1), padding=(1, 0, 0))
    x = torch.randn(1, 4, 6, 3, 3, dtype=torch.float64)
    conv = conv.double()
    with torch.no_grad():
        error = conv(x) - CausalTemporalConv3d.from_conv(conv)(x)
        second_difference = x[:, :, 2:] - 2 * x[:, :, 1:-1] + x[:, :, :-2]  # at frames 1 .. T-2
        expected = nn.functional.conv3d(second_difference, conv.weight[:, :, 2:3])
    torch.testing.assert_close(error[:, :, 1:-1], expected, atol=1e-12, rtol=0)


def test_shift_is_original_delayed_by_one_frame_with_spatial_geometry_kept():
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, (3, 3, 3), stride=(1, 2, 2), padding=(1, 2, 1), dilation=(1, 2, 1), groups=2)
    conv = conv.double()
    causal = CausalTemporalConv3d.from_conv(conv, "shift")
    x = torch.randn(2, 4, 5, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        original, shifted = conv(x), causal(x)
    assert shifted.shape == original.shape and shifted.dtype == torch.float64
    assert causal.weight.dtype == torch.float64 and causal.weight.device == conv.weight.device
    torch.testing.assert_close(shifted[:, :, 1:], original[:, :, :-1], atol=1e-12, rtol=0)


def test_frame_by_frame_matches_whole_clip():
    causal = CausalTemporalConv3d.from_conv(random_conv())
    x = torch.randn(1, 4, 6, 5, 5)
    with torch.no_grad():
        whole = causal(x)
        history = torch.zeros(1, 4, 2, 5, 5)  # the two zero frames the left padding stands for
        for t in range(6):
            window = torch.cat([history, x[:, :, t : t + 1]], dim=2)  # (b, c, 3, h, w)
            frame = nn.functional.conv3d(window, causal.weight, causal.bias, padding=(0, 1, 1))
            torch.testing.assert_close(frame[:, :, 0], whole[:, :, t], atol=1e-6, rtol=0)
            history = window[:, :, 1:]


def test_causalize_replaces_only_convs_that_see_the_future():
    shared = random_conv(seed=1)
    net = nn.Sequential(
        random_conv(seed=2),  # (3, 3, 3), padding 1: converted
        random_conv(kernel=(1, 3, 3), padding=(0, 1, 1)),  # spatial only: kept
        random_conv(kernel=(3, 1, 1), padding=(0, 0, 0)),  # already causal padding: kept
        nn.Sequential(shared),
        shared,  # one conv registered twice: converted once, both places point to it
    )
    kept = [net[1], net[2]]
    assert causalize_temporal_convs(net) == 2
    assert isinstance(net[0], CausalTemporalConv3d) and net[3][0] is net[4]
    assert isinstance(net[4], CausalTemporalConv3d) and [net[1], net[2]] == kept
    assert set(net.state_dict()) == {f"{i}.{p}" for i in (0, 1, 2) for p in ("weight", "bias")} | {
        "3.0.weight", "3.0.bias", "4.weight", "4.bias"}


def test_causalize_raises_before_touching_the_model():
    first, strided = random_conv(), random_conv(stride=(2, 1, 1))
    net = nn.Sequential(first, strided)
    with pytest.raises(ValueError, match="temporal stride 2"):
        causalize_temporal_convs(net)
    assert net[0] is first and net[1] is strided


# --- diffusers video UNets -----------------------------------------------------------------


class FrameWiseGroupNorm(nn.Module):
    """The same GroupNorm with frames folded into the batch: statistics per frame, not per clip."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):  # (b, c, f, h, w)
        b, c, f, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))  # (b f, c, h, w)
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def make_group_norms_frame_wise(layer):
    for name, child in list(layer.named_modules()):
        if isinstance(child, nn.GroupNorm):
            parent_name, _, attribute = name.rpartition(".")
            setattr(layer.get_submodule(parent_name), attribute, FrameWiseGroupNorm(child))


def tiny_unet_3d():
    return UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 32), layers_per_block=1,
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    )


def run_unet_3d(model, num_frames=5):
    torch.manual_seed(3)
    sample = torch.randn(1, 4, num_frames, 8, 8)  # (b, c, f, h, w)
    return model(sample, timestep=10, encoder_hidden_states=torch.randn(1, 3, 16)).sample


def tiny_unet_spatio_temporal():
    # TemporalResnetBlock hard-codes GroupNorm(32, ...), so channels are multiples of 32.
    return UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 32), layers_per_block=1,
        cross_attention_dim=16, num_attention_heads=(2, 2), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, num_frames=5,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    )


def run_unet_spatio_temporal(model, num_frames=5):
    torch.manual_seed(3)
    sample = torch.randn(1, num_frames, 8, 8, 8)  # (b, f, c, h, w)
    return model(sample, timestep=10, encoder_hidden_states=torch.randn(1, 1, 16),
                 added_time_ids=torch.randn(1, 3)).sample


# Each case: builder, runner, the layer type holding the temporal convs, and how to change that
# layer's input from frame `first` on (TemporalConvLayer takes (b f, c, h, w) with b = 1 here;
# TemporalResnetBlock takes (b, c, f, h, w)) and read its outputs up to frame `first` - 1.
UNET_CASES = {
    "UNet3DConditionModel": (tiny_unet_3d, run_unet_3d, TemporalConvLayer, 4,
                             lambda x, first: torch.cat([x[:first], torch.randn_like(x[first:])]),
                             lambda y, first: y[:first]),
    "UNetSpatioTemporalConditionModel": (tiny_unet_spatio_temporal, run_unet_spatio_temporal, TemporalResnetBlock, 2,
                                         lambda x, first: torch.cat([x[:, :, :first], torch.randn_like(x[:, :, first:])], 2),
                                         lambda y, first: y[:, :, :first]),
}


def build_with_random_temporal_convs(builder):
    torch.manual_seed(0)
    model = builder().eval()
    for module in model.modules():
        if isinstance(module, nn.Conv3d):  # TemporalConvLayer zero-initialises conv4: make it mix frames
            module.reset_parameters()
    return model


def capture_first_call(model, runner, layer):
    calls = []
    handle = layer.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    with torch.no_grad():
        output = runner(model)
    handle.remove()
    return output, calls[0]


def depends_on_later_frames(layer, call, change, select, first=3):
    (x, *rest), kwargs = call
    with torch.no_grad():
        before = select(layer(x, *rest, **kwargs), first)
        after = select(layer(change(x, first), *rest, **kwargs), first)
    return not torch.equal(before, after)


@pytest.mark.parametrize("case", UNET_CASES)
def test_causalize_replaces_every_temporal_conv_of_diffusers_unets(case):
    builder, runner, layer_type, convs_per_layer, _, _ = UNET_CASES[case]
    model = build_with_random_temporal_convs(builder)
    before = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d) and m.kernel_size[0] == 3]
    layers = [m for m in model.modules() if isinstance(m, layer_type)]
    keys = set(model.state_dict())
    output = runner(model)

    assert causalize_temporal_convs(model) == len(before) == convs_per_layer * len(layers) > 0
    assert not any(isinstance(m, nn.Conv3d) and m.kernel_size[0] == 3 for m in model.modules())
    assert [n for n, m in model.named_modules() if isinstance(m, CausalTemporalConv3d)] == before
    assert set(model.state_dict()) == keys  # pretrained checkpoints still load by name
    converted = runner(model)
    assert converted.shape == output.shape and torch.isfinite(converted).all()
    assert not torch.equal(converted, output)


@pytest.mark.parametrize("case", UNET_CASES)
def test_temporal_layers_no_longer_see_later_frames_through_their_convs(case):
    builder, runner, layer_type, _, change, select = UNET_CASES[case]
    model = build_with_random_temporal_convs(builder)
    layer = next(m for m in model.modules() if isinstance(m, layer_type))
    _, call = capture_first_call(model, runner, layer)  # the layer's real input inside the UNet
    # GroupNorm on (b, c, f, h, w) pools statistics over all frames (a leak this module does not
    # fix); make it per-frame so that what remains to test is the path through the convs.
    make_group_norms_frame_wise(layer)
    assert depends_on_later_frames(layer, call, change, select)  # symmetric convs: the future leaks
    causalize_temporal_convs(model)
    assert not depends_on_later_frames(layer, call, change, select)


@pytest.mark.parametrize("case", UNET_CASES)
def test_group_norm_over_frames_still_leaks_the_future(case):
    """Pins the documented limit: converting the convs alone does not make these layers causal."""
    builder, runner, layer_type, _, change, select = UNET_CASES[case]
    model = build_with_random_temporal_convs(builder)
    causalize_temporal_convs(model)
    layer = next(m for m in model.modules() if isinstance(m, layer_type))
    _, call = capture_first_call(model, runner, layer)
    assert depends_on_later_frames(layer, call, change, select)


@pytest.mark.parametrize("case", UNET_CASES)
def test_every_converted_conv_is_causal_on_its_real_input(case):
    builder, runner, _, _, _, _ = UNET_CASES[case]
    model = build_with_random_temporal_convs(builder)
    causalize_temporal_convs(model)
    convs = [m for m in model.modules() if isinstance(m, CausalTemporalConv3d)]
    inputs = []
    handles = [c.register_forward_pre_hook(lambda m, args: inputs.append((m, args[0]))) for c in convs]
    with torch.no_grad():
        runner(model)
    for handle in handles:
        handle.remove()
    assert len(inputs) == len(convs)
    with torch.no_grad():
        for conv, x in inputs:  # (b, c, f, h, w)
            changed = torch.cat([x[:, :, :3], torch.randn_like(x[:, :, 3:])], dim=2)
            assert torch.equal(conv(changed)[:, :, :3], conv(x)[:, :, :3])
