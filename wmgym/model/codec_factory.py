"""`make_codec`: the codec a checkpoint's config names, rebuilt from the dict its `config()` returned.

It sits above the codecs it builds (`wmgym.model.codec.PixelCodec`,
`wmgym.model.autoencoder.AutoencoderKLCodec`), so neither imports the other's module back.
"""

from __future__ import annotations

from wmgym.model.codec import Codec, PixelCodec


def make_codec(config: dict) -> Codec:
    """Build the codec a checkpoint's config describes; ValueError for an unknown type or key."""
    if not isinstance(config, dict):
        raise ValueError(f"codec must be an object with a 'type' key, got {config!r}")
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "pixel":
        if set(config) - {"patch"}:
            raise ValueError(f"codec: unknown keys {sorted(set(config) - {'patch'})} for a pixel codec; expected ['patch', 'type']")
        return PixelCodec(**config)
    if kind == "autoencoder_kl":
        from wmgym.model.autoencoder import AutoencoderKLCodec

        return AutoencoderKLCodec.from_config(config)
    raise ValueError(f"unknown codec type {kind!r}; expected 'pixel' or 'autoencoder_kl'")
