"""Causal conversion of pretrained symmetric temporal convolutions.

Dimension legend: b batch, c channels, t frames, h x w spatial size.

Pretrained video diffusion models (DynamiCrafter, ModelScope's `UNet3DConditionModel`, Stable
Video Diffusion's `UNetSpatioTemporalConditionModel`) mix frames with kernel-3 temporal
convolutions that read (x_{t-1}, x_t, x_{t+1}): frame t sees frame t+1. The seed (Vid2World
recipe) makes them causal without destroying what they learned: "Simply zeroing the
future-looking weights destroys learned dynamics. Instead, an extrapolative transformation
works: for a kernel [w0, w1, w2], the causal version becomes [0, w0 - w2, w1 + 2 w2]."

Convention shared by every mode: a centred kernel [w0, w1, w2] reads (x_{t-1}, x_t, x_{t+1});
the returned kernel [k0, k1, k2] is for a LEFT-PADDED causal convolution whose taps read
(x_{t-2}, x_{t-1}, x_t). Causality comes from the padding, not from the zero in k0: if
fine-tuning makes k0 non-zero, the conv still reads only the past and the present.

Only convolutions are converted. Other temporal mixing in those models still sees the future:
temporal self-attention (`TransformerTemporalModel`, `TemporalBasicTransformerBlock`) has no
causal mask, and `GroupNorm` applied to a (b, c, t, h, w) tensor (in `TemporalConvLayer`,
`TemporalResnetBlock`, `TransformerTemporalModel`) takes its statistics over all frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CAUSAL_MODES = ("extrapolative", "masked", "shift")


def causalize_temporal_kernel(weight: torch.Tensor, mode: str = "extrapolative") -> torch.Tensor:
    """Turn a centred kernel-3 temporal kernel into a causal one (a new tensor, same dtype/device).

    `weight` is a Conv3d weight (out, in, 3, kh, kw), temporal axis 2, or any other tensor
    (..., 3), temporal axis last. The result has the same shape; its taps read
    (x_{t-2}, x_{t-1}, x_t) of a left-padded conv (see the module docstring).

    Modes, for a centred kernel [w0, w1, w2]:

    - "extrapolative" (the seed's): [0, w0 - w2, w1 + 2 w2]. Replace the unseen x_{t+1} by its
      linear extrapolation 2 x_t - x_{t-1}:
          w0 x_{t-1} + w1 x_t + w2 (2 x_t - x_{t-1}) = (w0 - w2) x_{t-1} + (w1 + 2 w2) x_t.
      For x(t) = a + b t, x(t+1) = a + b t + b = 2 x(t) - x(t-1) holds exactly, so the causal
      output at t equals the symmetric output at t using only x(t-1) and x(t). In general the
      error is w2 (x_{t+1} - 2 x_t + x_{t-1}): w2 times the second difference in time.
    - "masked": zero the future tap in place, [w0, w1, 0] centred, i.e. [0, w0, w1] here. The
      naive conversion the seed warns "destroys learned dynamics"; kept as a baseline.
    - "shift": [w0, w1, w2] applied to (x_{t-2}, x_{t-1}, x_t): the original output delayed
      by one frame (causal output at t = symmetric output at t - 1).
    """
    if mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal mode {mode!r}; expected one of {CAUSAL_MODES}")
    axis = 2 if weight.ndim == 5 else -1
    if weight.ndim == 0 or weight.shape[axis] != 3:
        raise ValueError(
            f"expected a temporal kernel of size 3 (a Conv3d weight (out, in, 3, kh, kw) or a "
            f"(..., 3) tensor), got shape {tuple(weight.shape)}"
        )
    # Half-precision weights are combined in float32 so w1 + 2 w2 rounds once, on the way back.
    work = weight.to(torch.promote_types(weight.dtype, torch.float32))
    w0, w1, w2 = work.unbind(axis)
    if mode == "extrapolative":
        taps = (torch.zeros_like(w0), w0 - w2, w1 + 2 * w2)
    elif mode == "masked":
        taps = (torch.zeros_like(w0), w0, w1)
    else:  # shift
        taps = (w0, w1, w2)
    return torch.stack(taps, dim=axis).to(weight.dtype)


def _unsupported_reason(conv: nn.Conv3d) -> str | None:
    """Why `conv` cannot be converted, or None when it can."""
    if isinstance(conv.padding, str):
        return f"string padding {conv.padding!r} (give explicit padding (1, ph, pw))"
    if conv.kernel_size[0] != 3 or conv.padding[0] != 1:
        return f"temporal kernel {conv.kernel_size[0]} with temporal padding {conv.padding[0]} (need 3 and 1)"
    if conv.stride[0] != 1 or conv.dilation[0] != 1:
        return f"temporal stride {conv.stride[0]} / dilation {conv.dilation[0]} (need 1 and 1)"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r} (need 'zeros')"
    return None


class CausalTemporalConv3d(nn.Module):
    """A kernel-3 temporal Conv3d made causal: input (b, c_in, t, h, w) -> (b, c_out, t, h', w').

    Time is left-padded by 2 zero frames, then the converted kernel runs with no temporal
    padding, so output frame t reads input frames t-2, t-1, t only. Zeros (not replicate)
    because the pretrained conv also saw zeros beyond the clip, and because a stream started
    from two zero frames then gives the same outputs as the whole clip at once. Space keeps
    the original's padding, stride, dilation and groups: h', w' are the original's.

    Parameters are named `weight` (out, in / groups, 3, kh, kw) and `bias` (out,), like
    nn.Conv3d, so a converted model's state-dict keys are unchanged.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups: int = 1, mode: str = "extrapolative"):
        super().__init__()
        if weight.ndim != 5 or weight.shape[2] != 3:
            raise ValueError(f"expected a causal weight (out, in/groups, 3, kh, kw), got {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups, self.mode = groups, mode

    @classmethod
    def from_conv(cls, conv: nn.Conv3d, mode: str = "extrapolative") -> "CausalTemporalConv3d":
        """Convert `conv` (temporal kernel 3, temporal padding 1, temporal stride 1) with `mode`."""
        reason = _unsupported_reason(conv)
        if reason is not None:
            raise ValueError(f"cannot make {conv} causal: unsupported {reason}")
        with torch.no_grad():
            weight = causalize_temporal_kernel(conv.weight.detach(), mode)
            bias = None if conv.bias is None else conv.bias.detach().clone()
        causal = cls(weight, bias, conv.stride[1:], conv.padding[1:], conv.dilation[1:], conv.groups, mode)
        causal.weight.requires_grad_(conv.weight.requires_grad)
        if causal.bias is not None:
            causal.bias.requires_grad_(conv.bias.requires_grad)
        return causal.train(conv.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, 2, 0))  # (b, c_in, t + 2, h, w): two zero frames in the past
        return F.conv3d(x, self.weight, self.bias, (1, *self.stride), (0, *self.padding),
                        (1, *self.dilation), self.groups)  # (b, c_out, t, h', w')

    def extra_repr(self) -> str:
        out_channels, in_per_group, _, kh, kw = self.weight.shape
        return (f"{in_per_group * self.groups}, {out_channels}, kernel_size=(3, {kh}, {kw}), mode={self.mode!r}, "
                f"spatial stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}")


def is_temporal_conv(module: nn.Module) -> bool:
    """True for an nn.Conv3d with temporal kernel 3 and temporal padding 1 (or 'same'): it sees t+1."""
    if not isinstance(module, nn.Conv3d) or module.kernel_size[0] != 3:
        return False
    return module.padding == "same" or (not isinstance(module.padding, str) and module.padding[0] == 1)


def causalize_temporal_convs(module: nn.Module, mode: str = "extrapolative") -> int:
    """Replace, in place, every temporal conv under `module` by a CausalTemporalConv3d; return the count.

    A temporal conv is an nn.Conv3d (time on axis 2 of its (b, c, t, h, w) input) with temporal
    kernel 3 and temporal padding 1, spatial kernel any: (3, 1, 1) as in diffusers'
    `TemporalConvLayer` (UNet3DConditionModel) and `TemporalResnetBlock`
    (UNetSpatioTemporalConditionModel, and the SVD temporal VAE decoder's `time_conv_out`),
    or (3, k, k). Convs that already pad causally (temporal padding 0) are left alone. One that
    sees t+1 but cannot be converted (temporal stride 2, padding_mode 'replicate', ...) raises
    ValueError rather than being left silently non-causal.

    This handles convolutions only. The future still leaks through temporal attention without
    a causal mask and through GroupNorm statistics taken over frames; see the module docstring.
    """
    if mode not in CAUSAL_MODES:
        raise ValueError(f"unknown causal mode {mode!r}; expected one of {CAUSAL_MODES}")
    if is_temporal_conv(module):
        raise ValueError("`module` is itself a temporal conv; use CausalTemporalConv3d.from_conv")
    # remove_duplicate=False finds every place a shared conv is registered; it is converted once.
    targets = [(name, child) for name, child in module.named_modules(remove_duplicate=False) if is_temporal_conv(child)]
    # Convert all first, so an unsupported conv raises before the model is half-converted.
    converted = {id(conv): CausalTemporalConv3d.from_conv(conv, mode) for _, conv in targets}
    for name, conv in targets:
        parent_name, _, attribute = name.rpartition(".")
        setattr(module.get_submodule(parent_name), attribute, converted[id(conv)])
    return len(converted)
