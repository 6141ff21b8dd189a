"""VideoCLIP-to-text reward head: X-CLIP's similarity between the episode so far and a caption.

X-CLIP (Ni et al. 2022, "Expanding Language-Image Pretrained Models for General Video
Recognition") encodes `num_frames` frames with a cross-frame ViT and a multi-frame integration
transformer, and conditions the text embedding on the video through a video-specific prompt
generator. The score is the cosine of the two embeddings, as the model's own
`logits_per_video / logit_scale`. Weights come only from a local directory (a copy of e.g.
`microsoft/xclip-base-patch32` made with `save_pretrained` or `huggingface-cli download`):
nothing is downloaded.

Dimensions: b batch, t frames given, n the model's frames (`num_frames`), s its image side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from wmgym.model.world_model import resolve_device
from wmgym.rewards.base import RewardHead, as_frames, as_goal_texts

# CLIP's normalisation, what transformers' image processor for X-CLIP uses by default.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError('XCLIPHead needs transformers: pip install "wmgym[xclip]"') from error
    return transformers


class XCLIPHead(RewardHead):
    """Cosine similarity between an X-CLIP video embedding of the episode and a goal caption.

    Frames are uint8 (b, t, H, W, 3) (or (b, H, W, 3), read as t = 1); the goal is one str or
    b of them. `num_frames` frames are taken evenly from the t given, first and newest included
    (frames repeat when t < num_frames). Each frame is center-cropped to a square, resized to
    the model's `image_size` (bicubic, antialiased, as CLIP's processor resizes), scaled to [0, 1]
    and normalised with `image_mean` / `image_std`.

    Arguments:
        model: a transformers `XCLIPModel`.
        tokenizer: the tokenizer saved with it (a CLIP BPE tokenizer).
        image_mean, image_std: per-channel normalisation (3 floats each); CLIP's by default.
        device: "auto" (CUDA when available, else CPU), or a torch device.

    Attributes:
        num_frames: frames the model takes per video (its vision config's `num_frames`).
        image_size: side of the square frames the model takes.
    """

    name = "xclip"
    goal_kind = "text"

    def __init__(self, model, tokenizer, image_mean=CLIP_MEAN, image_std=CLIP_STD, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.tokenizer = tokenizer
        vision = model.config.vision_config
        self.num_frames = int(vision.num_frames)
        size = vision.image_size
        if not isinstance(size, int) and size[0] != size[1]:
            raise ValueError(f"XCLIPHead supports square model inputs, the config says image_size {size}")
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.max_text_length = int(model.config.text_config.max_position_embeddings)
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32, device=self.device).reshape(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32, device=self.device).reshape(3, 1, 1)

    @classmethod
    def from_local(cls, directory: str | os.PathLike, device: str | torch.device = "auto") -> XCLIPHead:
        """Load model, tokenizer and normalisation from `directory`, never from the network.

        The directory holds what `XCLIPModel.save_pretrained` and the tokenizer's
        `save_pretrained` write (config.json, *.safetensors, tokenizer files); the image mean and
        std are read from preprocessor_config.json or processor_config.json when present.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"no X-CLIP directory at {directory}; on a connected machine run "
                f"`huggingface-cli download microsoft/xclip-base-patch32 --local-dir {directory}` and copy it here"
            )
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} has no config.json; it must be an XCLIPModel saved with save_pretrained")
        transformers = _import_transformers()
        model = transformers.XCLIPModel.from_pretrained(directory, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
        mean, std = _read_normalisation(directory)
        return cls(model, tokenizer, image_mean=mean, image_std=std, device=device)

    def pixel_values(self, frames) -> torch.Tensor:
        """uint8 (b, t, H, W, 3) or (b, H, W, 3) -> the model's float input (b, n, 3, s, s) on `device`."""
        x = as_frames(frames)
        b, t, height, width = x.shape[:4]
        index = torch.linspace(0, t - 1, self.num_frames).round().long()  # (n,), repeats when t < n
        x = x[:, index.to(x.device)].to(self.device)  # (b, n, H, W, 3)
        x = x.reshape(b * self.num_frames, height, width, 3).permute(0, 3, 1, 2).float() / 255.0  # (b*n, 3, H, W)
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        x = x[:, :, top : top + side, left : left + side]
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True, align_corners=False)
        x = (x.clamp(0.0, 1.0) - self.image_mean) / self.image_std
        return x.reshape(b, self.num_frames, 3, self.image_size, self.image_size)

    @torch.no_grad()
    def score(self, frames, goal) -> torch.Tensor:
        """Cosine similarity of each video and its caption -> float (b,) on `device`, in [-1, 1]."""
        pixels = self.pixel_values(frames)  # (b, n, 3, s, s)
        b = pixels.shape[0]
        texts = as_goal_texts(goal, b)
        unique = sorted(set(texts))  # usually one caption for the whole batch: encode it once
        tokens = self.tokenizer(
            unique, padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        ).to(self.device)
        dtype = next(self.model.parameters()).dtype
        out = self.model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels.to(dtype)
        )
        # video_embeds (b, d) and text_embeds (b, k, d) come L2-normalised; text k is prompted by video b.
        column = torch.tensor([unique.index(text) for text in texts], device=self.device)
        text = out.text_embeds[torch.arange(b, device=self.device), column]  # (b, d)
        return (out.video_embeds * text).sum(-1).float()


def _read_normalisation(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image processor's mean and std saved in `directory`, else CLIP's."""
    for file_name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = directory / file_name
        if path.is_file():
            config = json.loads(path.read_text())
            config = config.get(key, {}) if key else config
            if "image_mean" in config and "image_std" in config:
                mean, std = tuple(map(float, config["image_mean"])), tuple(map(float, config["image_std"]))
                if len(mean) != 3 or len(std) != 3:
                    raise ValueError(f"{path}: image_mean and image_std must have 3 values, got {mean} and {std}")
                return mean, std
    return CLIP_MEAN, CLIP_STD
