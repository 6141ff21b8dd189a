"""The arguments of `wmgym train-wm`, apart from the training loop (`wmgym.train.world_model`):
the CLI reads them, for `--help` too, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainWorldModelConfig:
    """Train the world model, a video diffusion model that predicts each next frame from the frames and actions before it.

    Diffusion forcing under Hugging Face Accelerate, on one CPU, one GPU or several processes
    with `accelerate launch -m wmgym.cli train-wm ...`; resumable (`--resume`) and able to
    fine-tune a saved model (`--init-from`). Then `wmgym bundle` turns a run into a WMFold-v0
    bundle."""

    data: str
    """Path of a zarr episode store written by `wmgym generate`."""
    out: str
    """Run directory: checkpoints/, latest, log.jsonl, train_config.json (and tensorboard/)."""
    extra_data: tuple[str, ...] = ()
    """More stores (same frame size and tasks) whose train and val splits join `data`'s, each
    split on its own, e.g. one of replay episodes (`wmgym generate --kinds X`)."""
    val_fraction: float = 0.1
    """Fraction of each store's episodes held out for validation (split seed 0); `wmgym bundle --data`
    and `wmgym eval --data` take the same fraction to find them."""
    steps: int = 20000
    """Optimizer steps in total (the LR schedule spans them)."""
    stop_after: int | None = None
    """Stop (with a checkpoint) once this many steps are done, e.g. for time-boxed jobs; resume later."""
    stop_after_minutes: float | None = None
    """Stop (with a checkpoint) at the first step that ends this many minutes after training began
    (data loading not counted), e.g. on a GPU held for a fixed time; resume later. With a cosine schedule the
    learning rate is then not yet decayed: pair it with `lr_schedule constant` and the EMA."""
    batch_size: int = 16
    """Windows per process per step (the global batch is batch_size * num_processes)."""
    num_frames: int = 5
    """Frames per training window (num_frames - 1 actions)."""
    learning_rate: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (matrices only; biases, norms, embeddings are not decayed)."""
    warmup_steps: int = 500
    """Steps of linear learning-rate warm-up."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """After warm-up: hold the peak, or decay it to zero at `steps` along a cosine."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    ema_decay: float = 0.999
    """Largest EMA decay; diffusers' EMAModel ramps up to it as (1 + s) / (10 + s)."""
    action_dropout: float = 0.15
    """Probability of dropping each frame's action (per frame, for classifier-free guidance)."""
    gripper_loss_weight: float = 0.0
    """w > 0: latent pixels near a gripper count 1 + w times in the training loss (a model
    conditioned on the grippers view; `WorldModel.compute_loss`). val/loss stays unweighted."""
    gripper_dilation: int = 4  # wmgym.model.world_model.GRIPPER_DILATION, spelt out to keep torch out (tests/test_cli.py)
    """Pixels the gripper mask of `gripper_loss_weight` is grown by."""
    focus_window_starts: tuple[int, int] | None = None
    """(first, last): the training windows that start at frame first..last of their episode (e.g.
    `2 5`, those holding the demonstrator's grasp and lift, where whether a grasp holds is
    decided) are drawn `focus_repeats` times per epoch instead of once. Validation is unchanged."""
    focus_repeats: int = 1
    """Times per epoch a window in `focus_window_starts` is drawn (1: no oversampling)."""
    pose_lr_scale: float = 1.0
    """Multiplies the learning rate of the pose embedding (`pose_input embedding`), the
    zero-initialised path a pose-conditioned fine-tune has to teach from scratch."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision, passed to Accelerate (fp16 adds a gradient scaler; use on GPU)."""
    seed: int = 0
    """Seed of the initial weights, the data order and the diffusion noise."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk (0 = keep all)."""
    log_every: int = 50
    """Steps between lines of out/log.jsonl."""
    validate_every: int = 500
    """Steps between validations (loss, x0-PSNR from pure noise, copy-last-frame PSNR)."""
    val_batches: int = 4
    """Batches of validation windows, spread evenly over the val split."""
    resume: bool = False
    """Continue from the newest intact checkpoint in out/checkpoints (a damaged newer one is
    reported and set aside), or start when there is none (the checkpoint's model config wins).
    Refused when a setting differs from out/train_config.json (see --allow-config-change)."""
    allow_config_change: bool = False
    """Let --resume continue with settings that differ from the run's train_config.json
    (--data, --seed, --batch-size, --learning-rate, ...: each change is listed in a warning and
    the file takes the new values). Without it such a resume is refused. Always free to change
    on resume: --steps, --stop-after, --stop-after-minutes, --device, --num-workers,
    --tensorboard, --checkpoint-every, --keep-checkpoints, --log-every."""
    init_from: str | None = None
    """Start a new run from a saved model's weights (a `WorldModel.save_pretrained` directory, e.g.
    wmgym/assets/wmfold/world_model) with a fresh optimizer and schedule: fine-tuning. Its config
    (architecture, codec, action statistics, sampler) wins over the flags here."""
    tensorboard: bool = False
    """Also log to out/tensorboard (needs the optional `tensorboard` package)."""
    width: int = 128
    """Transformer width."""
    depth: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    patch_size: int = 8
    """Latent pixels per token side (64x64 pixels, pixel codec, 8: 64 tokens a frame)."""
    codec: str = "pixel"
    """'pixel' (frames are the latents) or a codec checkpoint directory from `wmgym train-codec`."""
    num_steps: int = 8
    """Sampler default: denoising steps per generated frame."""
    history_timestep: int = 20
    """Sampler default: noise level the history frames are held at."""
    condition_views: tuple[str, ...] = ()
    """Pixel-aligned views the model is conditioned on, from the store (Dexterous World Models'
    hand conditioning): e.g. `grippers`, the grippers rendered alone at their commanded poses.
    With --init-from a model without them, the new condition input starts at zero (the
    fine-tuned model starts exactly where the loaded one was)."""
    pose_conditioning: bool = False
    """Also condition on the grippers' pose vector of every frame (tool-centre xyz and width of
    each gripper, from the store: exactly where a gripper closes, height included, which one
    64x64 camera barely shows). It enters through a zero-initialised path (`pose_input`), so
    with --init-from a model without it the fine-tuned model starts exactly where the loaded
    one was."""
    pose_input: Literal["embedding", "channels"] = "embedding"
    """How a new pose-conditioned model reads the pose: `embedding`, an MLP into each frame's
    adaLN conditioning vector, as the action enters; `channels`, constant channels through the
    patch projection of the condition views (a global additive token offset, which a long
    fine-tune left unused). Ignored for a model that already reads the pose."""
    held_conditioning: bool = False
    """Also condition every frame on the simulator's grasp state, whether each gripper holds
    cloth (the stores' `robot{0,1}_held_particles`, teacher-forced; in imagination a prior over
    it, `wmgym train-grasp-prior`). It joins the frame vector the pose embedding reads (a
    zero-initialised path, so with --init-from a model without it the fine-tuned model starts
    exactly where the loaded one was; `pose_lr_scale` speeds it up). Every store needs the held
    arrays."""
    prediction: Literal["v", "residual"] = "residual"
    """Denoiser output: 'residual' (x0 minus the previous frame: starts at the copy-last-frame
    baseline) or 'v' (plain v-prediction)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' lets Accelerate pick (CUDA when available); 'cpu' forces the CPU."""
    num_workers: int = 0
    """DataLoader worker processes (windows are in memory; 0 is usually enough)."""
