"""VideoCLIP: a small video-text contrastive model, trained from scratch, and its reward head.

Dimension legend: b clips, t given frames, n = `num_frames` frames the model sees,
H x W pixels (= `image_size`), c conv channels, h x w feature map, f frame width,
d joint embedding width, m texts, l tokens.

Video encoder. A clip of any length is resampled to n frames evenly over it, first and newest
frame always included (`resample_indices`). Each frame goes through a strided conv net
together with its difference to the first frame (6 input channels), so "what changed since the
start" is visible to every frame's features; the feature map is flattened, not pooled, so the
encoder knows *where* things are (left sleeve vs right sleeve). The n frame vectors, each with a
learned time embedding, are concatenated and mixed by an MLP into one d-vector.

Text encoder. Lower-cased words from a fixed vocabulary (built from the training captions and
saved in the config; unknown words map to <unk>), token + position embeddings, a small
pre-norm transformer, mean pooling over the words, a projection to d. The reward head refuses
goal texts with words outside the vocabulary (`VideoCLIPHead.check_text`): read as <unk> they
would give a reward for some other text without a word (issue 36); `allow_unknown_words=True`
opts into that reading, with a warning.

Both embeddings are unit vectors; similarities are cosines, and the learned temperature
(`logit_scale` = log(1 / temperature)) turns them into logits for contrastive training and for
the success judge (`wmgym.rewards.judge`).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wmgym.model.config_checks import check_field_types
from wmgym.rewards.base import RewardHead, as_frames, as_goal_texts, to_unit_float
from wmgym.model.model_files import ConfigAndWeights

CONFIG_FILE, WEIGHTS_FILE = ConfigAndWeights.CONFIG_FILE, ConfigAndWeights.WEIGHTS_FILE
PAD, UNK = "<pad>", "<unk>"
NOT_DONE_CAPTION = "the shirt is not folded yet"
"""The caption of every clip that shows no finished fold: the judge's "no" candidate."""
MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on exp(logit_scale)
_WORD = re.compile(r"[a-z0-9']+")


def split_words(text: str) -> list[str]:
    """Lower-cased words of `text`; punctuation is dropped."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts) -> list[str]:
    """[<pad>, <unk>, sorted distinct words of `texts`...]."""
    return [PAD, UNK] + sorted({word for text in texts for word in split_words(text)})


def resample_indices(length: int, num_frames: int) -> np.ndarray:
    """`num_frames` frame indices evenly over [0, length - 1], rounded; first and last included.

    Fewer given frames than `num_frames` repeat some (1 frame -> all zeros)."""
    if length < 1:
        raise ValueError(f"a clip needs at least one frame, got {length}")
    return np.rint(np.linspace(0, length - 1, num_frames)).astype(np.int64)


@dataclass
class VideoCLIPConfig:
    """Everything that rebuilds a `VideoCLIP` (saved as config.json)."""

    image_size: int = 64
    """Square frame size the model runs at; frames of another size are resized (bilinear, antialiased)."""
    num_frames: int = 8
    """Frames the video encoder sees: a clip is resampled to this many, evenly over its frames."""
    conv_channels: tuple[int, ...] = (16, 32, 64, 64)
    """Widths of the per-frame conv net; each level halves the resolution (stride 2)."""
    frame_width: int = 64
    """Width of each frame's vector before temporal mixing."""
    embed_dim: int = 128
    """Width of the joint video-text embedding."""
    text_width: int = 64
    """Width of the text transformer."""
    text_layers: int = 1
    """Layers of the text transformer."""
    text_heads: int = 4
    """Attention heads of the text transformer."""
    vocabulary: list = field(default_factory=lambda: [PAD, UNK])
    """Words known to the text encoder; index 0 is <pad>, 1 is <unk> (unknown words)."""
    max_text_length: int = 24
    """Words kept per text (longer texts are cut)."""
    temperature_init: float = 0.07
    """Initial softmax temperature (CLIP's); the model learns it."""
    success_threshold: float = 0.5
    """The judge says "done" when the task caption's probability among the candidates is at
    least this; `wmgym train-videoclip` calibrates it on held-out episodes."""
    task_captions: dict = field(default_factory=dict)
    """Task name -> instruction caption (e.g. "fold_half" -> "fold the shirt in half, ...")."""
    not_done_caption: str = NOT_DONE_CAPTION
    """Caption of clips that show no finished fold (the judge's alternative)."""

    def __post_init__(self):
        check_field_types(self)  # a wrong type in config.json fails here, not deep inside torch
        self.conv_channels = tuple(self.conv_channels)
        sizes = {name: getattr(self, name) for name in ("image_size", "num_frames", "frame_width", "embed_dim", "text_width",
                                                        "text_layers", "text_heads", "max_text_length")}
        small = {name: size for name, size in sizes.items() if size < 1}
        if small or not self.conv_channels or min(self.conv_channels) < 1:
            raise ValueError(f"sizes must be >= 1 and conv_channels non-empty, got {small or {'conv_channels': self.conv_channels}}")
        if not self.temperature_init > 0 or not 0.0 <= self.success_threshold <= 1.0:
            raise ValueError(f"temperature_init must be > 0 and success_threshold in [0, 1], got {self.temperature_init} "
                             f"and {self.success_threshold}")
        words = [*self.vocabulary, self.not_done_caption, *self.task_captions, *self.task_captions.values()]
        if not all(isinstance(word, str) for word in words):
            raise ValueError("vocabulary, task_captions (names and captions) and not_done_caption must hold strings")
        if self.vocabulary[:2] != [PAD, UNK]:
            raise ValueError(f"vocabulary must start with {[PAD, UNK]}, got {self.vocabulary[:2]}")
        if self.image_size % 2 ** len(self.conv_channels):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2 ** {len(self.conv_channels)} "
                             f"(one halving per conv level {self.conv_channels})")


class VideoEncoder(nn.Module):
    """uint8-derived float clips (b, n, 3, H, W) in [-1, 1] -> unit vectors (b, d)."""

    def __init__(self, config: VideoCLIPConfig):
        super().__init__()
        layers, channels = [], 6  # the frame and its difference to the first frame
        for width in config.conv_channels:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(min(8, width), width), nn.SiLU()]
            channels = width
        self.conv = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.conv_channels)
        self.frame_proj = nn.Linear(channels * side * side, config.frame_width)
        self.time_embedding = nn.Parameter(torch.zeros(config.num_frames, config.frame_width))
        self.mix = nn.Sequential(nn.LayerNorm(config.num_frames * config.frame_width),
                                 nn.Linear(config.num_frames * config.frame_width, 2 * config.embed_dim), nn.SiLU(),
                                 nn.Linear(2 * config.embed_dim, config.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.frame_features(x, x[:, :1]))

    def frame_features(self, x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Frames (b, n, 3, H, W) and their clip's first frame (b, 1, 3, H, W) -> (b, n, f).

        Each frame's feature depends only on itself and the first frame, so an environment
        can compute it once per frame and reuse it (`embed`) as the resampled clip changes."""
        b, n = x.shape[:2]
        x = torch.cat([x, x - first], dim=2)  # (b, n, 6, H, W): the frame and its difference to the first
        return self.frame_proj(self.conv(x.flatten(0, 1)).flatten(1)).view(b, n, -1)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features (b, num_frames, f) in clip order -> unit vectors (b, d)."""
        return F.normalize(self.mix((features + self.time_embedding).flatten(1)), dim=-1)


class TextEncoder(nn.Module):
    """Token ids (m, l) and a padding mask (m, l), True = word -> unit vectors (m, d)."""

    def __init__(self, config: VideoCLIPConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(len(config.vocabulary), config.text_width)
        self.position_embedding = nn.Parameter(torch.zeros(config.max_text_length, config.text_width))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(config.text_width, config.text_heads, 2 * config.text_width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, config.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.text_width)
        self.proj = nn.Linear(config.text_width, config.embed_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]  # (m, l, w)
        x = self.norm(self.transformer(x, src_key_padding_mask=~mask))
        weights = mask.unsqueeze(-1).to(x.dtype)  # (m, l, 1)
        pooled = (x * weights).sum(1) / weights.sum(1)  # (m, w)
        return F.normalize(self.proj(pooled), dim=-1)  # (m, d)


class VideoCLIP(ConfigAndWeights, nn.Module):
    """Video and text encoders into one space (see the module docstring).

    `encode_video(frames uint8 (b, t, H, W, 3)) -> (b, d)` and `encode_text(list of m str) ->
    (m, d)` return unit vectors on `device`; `logit_scale.exp()` is 1 / temperature.
    """

    CONFIG_CLASS, MODEL_NAME = VideoCLIPConfig, "VideoCLIP"

    def __init__(self, config: VideoCLIPConfig, device: str | torch.device = "auto"):
        super().__init__()
        from wmgym.model.world_model import resolve_device

        self.config = config
        self.video = VideoEncoder(config)
        self.text = TextEncoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / config.temperature_init))))
        self.word_ids = {word: i for i, word in enumerate(config.vocabulary)}
        self.to(resolve_device(device))

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 100 as in CLIP: multiplies cosines into logits."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # ------------------------------------------------------------ inputs
    def prepare_clip(self, frames) -> torch.Tensor:
        """uint8 (b, t, H, W, 3) or (b, H, W, 3) -> float (b, n, 3, S, S) in [-1, 1] on `device`.

        Resamples to n = `num_frames` frames (`resample_indices`) and resizes frames that are
        not S x S (S = `image_size`), bilinear with antialiasing."""
        x = as_frames(frames)
        index = torch.from_numpy(resample_indices(x.shape[1], self.config.num_frames)).to(x.device)
        return self.to_input(x.index_select(1, index))

    def to_input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (b, n, H, W, 3), already n = `num_frames` -> float (b, n, 3, S, S) in [-1, 1] on `device`."""
        x = to_unit_float(frames.to(self.device))  # (b, n, 3, H, W)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            b, n = x.shape[:2]
            x = F.interpolate(x.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.view(b, n, 3, size, size)
        return x

    def unknown_words(self, texts: list[str]) -> list[str]:
        """The distinct words of `texts` (sorted) that are not in the vocabulary: `tokenize` reads
        them as <unk>."""
        return sorted({word for text in texts for word in split_words(text) if word not in self.word_ids})

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """m texts -> ids (m, l) long and mask (m, l) bool (True = word), l = longest text (capped).

        Unknown words get the <unk> id; a text with no words is one <unk>. (Training tokenises
        its own captions here; goal texts from users go through `VideoCLIPHead`, which refuses
        unknown words unless told otherwise.)"""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts must be a list of str, got {texts!r}")
        unk = self.word_ids[UNK]
        rows = [[self.word_ids.get(w, unk) for w in split_words(t)][: self.config.max_text_length] or [unk] for t in texts]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids.to(self.device), (ids != 0).to(self.device)

    # ------------------------------------------------------------ encoders
    def encode_video(self, frames) -> torch.Tensor:
        """uint8 frames (b, t, H, W, 3), the episode so far, newest last -> unit vectors (b, d)."""
        return self.video(self.prepare_clip(frames))

    def encode_frames(self, frames, first) -> torch.Tensor:
        """uint8 frames (b, n, H, W, 3) and their episode's first frame (b, H, W, 3) -> per-frame
        features (b, n, f); `VideoEncoder.embed` of `num_frames` of them = `encode_video` of those frames."""
        return self.video.frame_features(self.to_input(as_frames(frames)), self.to_input(as_frames(first)))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """m strings -> unit vectors (m, d)."""
        return self.text(*self.tokenize(texts))

    # ------------------------------------------------------------ save / load


class VideoCLIPHead(RewardHead):
    """Reward head: cosine similarity of the clip so far and the goal text, in [-1, 1].

    `score(frames uint8 (b, t, H, W, 3), goal str or b strs) -> (b,)` on `device`. Text
    embeddings are cached per string. The model runs in eval mode without gradients.

    Goal texts may only use the model's vocabulary (the words of its training captions): a text
    with other words, or with no words, raises ValueError listing them and the vocabulary
    (`check_text`, which environments call when a goal is set, before any step). With
    `allow_unknown_words=True` such words are read as <unk> instead (one token for every word the
    model never saw), with one warning per word.
    """

    name = "videoclip"
    goal_kind = "text"

    def __init__(self, model: VideoCLIP, allow_unknown_words: bool = False):
        self.model = model.eval()
        self.device = model.device
        self.allow_unknown_words = bool(allow_unknown_words)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._warned_words: set[str] = set()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "auto",
                        allow_unknown_words: bool = False) -> "VideoCLIPHead":
        return cls(VideoCLIP.from_pretrained(directory, device=device), allow_unknown_words=allow_unknown_words)

    def check_text(self, texts: str | list[str]) -> None:
        """ValueError unless every word of `texts` (one str or several) is in the model's
        vocabulary and every text has a word; it lists the unknown words and the vocabulary.
        With `allow_unknown_words` it warns instead (once per word). Cheap: no model call."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"a goal text must be a str or a list of str, got {texts!r}")
        unknown = self.model.unknown_words(texts)
        wordless = [text for text in texts if not split_words(text)]
        if not unknown and not wordless:
            return
        known = [word for word in self.model.config.vocabulary if word not in (PAD, UNK)]
        problem = (f"words the VideoCLIP model never saw: {unknown}" if unknown else "") + \
                  ("; " if unknown and wordless else "") + (f"no words at all: {wordless}" if wordless else "")
        if not self.allow_unknown_words:
            offending = [text for text in texts if not split_words(text) or set(split_words(text)) & set(unknown)]
            raise ValueError(f"goal text {offending[0] if len(offending) == 1 else offending!r} has {problem}; its "
                             f"vocabulary is {known}: use those words (e.g. a task caption), or pass "
                             "allow_unknown_words=True to read them as <unk>, one token for every word it never saw")
        new = sorted(set(unknown) - self._warned_words) + [text for text in wordless if text not in self._warned_words]
        if new:
            self._warned_words.update(new)
            warnings.warn(f"goal text has {problem}; read as <unk> (allow_unknown_words=True), one token for every word "
                          f"the model never saw, so the reward does not reflect them. The vocabulary is {known}", stacklevel=2)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """m strings -> (m, d) unit vectors, each distinct string encoded once per head (and
        checked by `check_text` the first time)."""
        new = sorted({t for t in texts if t not in self._text_cache})
        if new:
            self.check_text(new)
            self._text_cache.update(zip(new, self.model.encode_text(new)))
        return torch.stack([self._text_cache[t] for t in texts])

    @torch.no_grad()
    def video_embeddings(self, frames) -> torch.Tensor:
        """uint8 (b, t, H, W, 3) -> (b, d) unit vectors."""
        return self.model.encode_video(frames)

    @torch.no_grad()
    def frame_features(self, frames, first) -> torch.Tensor:
        """uint8 frames (b, n, H, W, 3), first frames (b, H, W, 3) -> per-frame features (b, n, f)."""
        return self.model.encode_frames(frames, first)

    @torch.no_grad()
    def embeddings_of_features(self, features: torch.Tensor) -> torch.Tensor:
        """Features (b, num_frames, f) of the resampled clip (`resample_indices`) -> (b, d) unit vectors."""
        return self.model.video.embed(features)

    def score(self, frames, goal) -> torch.Tensor:
        video = self.video_embeddings(frames)  # (b, d)
        text = self.text_embeddings(as_goal_texts(goal, video.shape[0]))  # (b, d)
        return (video * text).sum(-1)  # (b,)
