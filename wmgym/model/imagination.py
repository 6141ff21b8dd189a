"""`Imagination`: a batch of rollouts in progress, stepped one frame at a time.

Dimension legend: b batch (imagined episodes), r restarted rows, c context frames,
C x h x w a latent frame, V condition views.

`WorldModel.rollout` runs one to the end; environments keep one alive across `step` calls
and restart single rows (`start(frames, rows=...)`) while the others go on. The sampler
(per-frame DDIM with noisy history, schedule.py) and the KV cache are written by hand:
no library generates video frame by frame with per-frame noise levels.

Per generated frame:
    1. x ~ N(0, I); for k in the sampling timesteps: v = denoiser(x at level k | history),
       guided: v = v_uncond + s (v_cond - v_uncond), dropping only the newest action;
       x = DDIM step (schedule.ddim_step).
    2. The finished frame joins the history at `history_timestep` noise: one write pass
       stores its keys and values in the cache (or, without a cache, its latent is kept and
       the window is recomputed at every call: the slow reference the cache is tested against).
"""

from __future__ import annotations

import torch

from wmgym.model.conditions import Conditions
from wmgym.model.kv_cache import KVCache
from wmgym.model.schedule import add_noise, ddim_step, sampling_timesteps
from wmgym.model.world_model_config import check_sampler_arguments


class NonFiniteLatentsError(ValueError):
    """The world model produced NaN or infinite latents (or its codec such pixels): broken
    weights or sampler settings. Raised instead of returning frames, which as uint8 would be
    silently black (issue 36)."""


class Imagination:
    """b imagined rollouts over one batched, KV-cached denoiser.

    Args:
        model: the world model (a `wmgym.model.world_model.WorldModel`; this module does not
            import it, so that `WorldModel.rollout` can drive an `Imagination` without a loop).
        batch_size: b.
        num_steps, guidance_scale: override the checkpoint's sampler defaults.
        use_cache: False recomputes the window at every denoiser call (same frames, slower;
            only whole-batch starts).
    """

    def __init__(self, model, batch_size: int, *, num_steps: int | None = None,
                 guidance_scale: float | None = None, use_cache: bool = True):
        s, dcfg = model.sampler, model.denoiser.config
        check_sampler_arguments(s.num_steps if num_steps is None else num_steps,  # the defaults too: they may be edited
                                s.guidance_scale if guidance_scale is None else guidance_scale)
        self.model, self.batch_size, self.use_cache = model, batch_size, use_cache
        self.num_steps = s.num_steps if num_steps is None else int(num_steps)
        self.guidance_scale = s.guidance_scale if guidance_scale is None else float(guidance_scale)
        self.timesteps = sampling_timesteps(self.num_steps, model.config.num_train_timesteps).to(model.device)
        # One step: the distilled one-step denoiser (`wmgym distill`) if the model has one, for every call,
        # cache writes included (its history keys and values are its own); else the model's denoiser.
        self.denoiser = model.sampling_denoiser(self.num_steps)
        self.rep = 2 if self.guidance_scale != 1.0 else 1  # guided: [conditional, newest action dropped]
        self._new_cache = lambda: KVCache(dcfg.depth, dcfg.tokens_per_frame, s.window_frames, s.keep_first_frame)
        self.cache = self._new_cache() if use_cache else None
        self.parts: list[tuple] = []  # recompute mode: (latents, timesteps, actions, dropped, cond) per frame, cond = (maps, vectors)
        self.last: torch.Tensor | None = None  # newest history latent (b*rep, 1, C, h, w), at history noise
        self.last_clean: torch.Tensor | None = None  # the same frame before history noise: the residual anchor
        self.num_generated = 0  # frames generated since the last whole-batch start (for error messages)
        # What the newest step() saw, per row (b,), for trust scores (`wmgym.trust`); free by-products of sampling:
        self.disagreement: torch.Tensor | None = None  # mean squared latent difference, first clean estimate vs final frame
        self.change: torch.Tensor | None = None  # mean squared latent difference, final frame vs the row's previous frame
        self.gated: torch.Tensor | None = None  # bool: the row's action was replaced by the null action (out of support)
        self.track_trust = True  # False: leave disagreement and change None (saves two reductions a step)

    @property
    def is_started(self) -> bool:
        return self.last is not None

    # ------------------------------------------------------------ start / restart
    @torch.no_grad()
    def start(self, context_frames, rows=None, generator: torch.Generator | None = None,
              conditions: Conditions | None = None) -> None:
        """(Re)start rows from context frames.

        Args:
            context_frames: uint8 (r, c, H, W, 3), c >= 1: the rows' start frames.
            rows: long (r,) rows to restart, or None for all b (then r = b). Restarting some
                rows needs the cache and a started batch.
            generator: for the history noise of the context frames.
            conditions: the context frames' `Conditions` (r, c), if the model has any
                (`WorldModel.encode_conditions`).
        """
        model, s = self.model, self.model.sampler
        context = model.encode_frames(context_frames)  # (r, c, C, h, w)
        if not torch.isfinite(context).all():
            raise NonFiniteLatentsError("the codec encoded the context frames to non-finite latents; its weights are broken")
        r, c = context.shape[:2]
        if rows is None and r != self.batch_size:
            raise ValueError(f"starting every row needs {self.batch_size} context clips, got {r}")
        hist = torch.full((r, c), s.history_timestep, device=model.device, dtype=torch.long)
        noisy = add_noise(context, torch.randn(context.shape, device=model.device, generator=generator), hist, model.alphas_cumprod)
        null = torch.zeros(r, c, model.action_dim, device=model.device)
        dropped = torch.ones(r, c, dtype=torch.bool, device=model.device)
        cond = model.encode_conditions(conditions, r, c)  # (maps, vectors)
        if rows is None:
            self.num_generated = 0
            if self.is_started:  # a fresh history for every row
                self.cache, self.parts = (self._new_cache() if self.use_cache else None), []
            self._add(noisy, hist, null, dropped, cond, clean=context)
            return
        if not (self.use_cache and self.is_started):
            raise ValueError("restarting some rows needs use_cache=True and a batch started with rows=None")
        rows = torch.as_tensor(rows, dtype=torch.long, device=model.device)
        if rows.shape != (r,) or rows.numel() and (rows.min() < 0 or rows.max() >= self.batch_size):
            raise ValueError(f"rows must be {r} indices in [0, {self.batch_size}), got {rows.tolist()}")
        rows = torch.cat([rows + i * self.batch_size for i in range(self.rep)])
        noisy, hist, null, dropped, cond, context = self._repeat(noisy, hist, null, dropped, cond, context)
        fresh = self._new_cache()
        with model.inference_autocast(self.batch_size * self.rep):  # the batch's precision, so its cache stays one dtype
            self.denoiser(noisy, hist, null, dropped, *cond, cache=fresh, write_cache=True, return_output=False)
        self.cache.append_rows(rows, fresh)
        self.last[rows], self.last_clean[rows] = noisy[:, -1:], context[:, -1:]

    # ------------------------------------------------------------ one frame for every row
    @torch.no_grad()
    def step(self, actions, generator: torch.Generator | None = None, conditions: Conditions | None = None,
             drop_actions: bool = False) -> torch.Tensor:
        """Generate the next frame of every row.

        Args:
            actions: float (b, action_dim) raw actions (normalised here); actions[i] moves row i.
            generator: sampling noise (same generator state, same frames).
            conditions: the new frame's `Conditions` (b, 1), if the model has any.
            drop_actions: replace the action by the null action of action dropout (the model's
                action-free prediction; the frame keeps it as history): the null-action baseline.
                Rows whose action lies outside the training support (`WorldModel.out_of_support`,
                the sampler's `action_support`) get the null action either way.
        Returns:
            latents (b, 1, C, h, w) of the new frames (`model.decode_latents` makes pixels).
        Raises:
            NonFiniteLatentsError: the sampled latents are not finite (broken weights or settings).
        """
        if not self.is_started:
            raise RuntimeError("call start() before step()")
        model, s = self.model, self.model.sampler
        b = self.batch_size
        actions = _rows(actions)
        if actions.dim() != 2 or actions.shape[0] != b:
            raise ValueError(f"step takes one action per row, (b={b}, {model.action_dim}), got {tuple(actions.shape)}")
        action = model.normalize_actions(actions[:, None])  # (b, 1, action_dim)
        dropped = model.out_of_support(actions[:, None].to(model.device)) | drop_actions  # (b, 1)
        cond = model.encode_conditions(conditions, b, 1)  # (maps, vectors)
        # One autocast context for the frame's denoiser calls, so that bf16 copies of the weights are made once
        # per frame rather than once per call (autocast caches them until its outermost context exits).
        with model.inference_autocast(b * self.rep):
            x = torch.randn((b, 1, *self.last_clean.shape[2:]), device=model.device, generator=generator)
            first_estimate = None
            for k, k_next in zip(self.timesteps[:-1], self.timesteps[1:]):
                timesteps = torch.full((b, 1), int(k), device=model.device, dtype=torch.long)
                v = self._predict(x, timesteps, action, cond, dropped)
                if self.rep == 2:
                    v_cond, v_uncond = v.chunk(2)
                    v = v_uncond + self.guidance_scale * (v_cond - v_uncond)
                if first_estimate is None and self.track_trust:  # the first call's clean estimate (schedule.ddim_step, step 1)
                    a = model.alphas_cumprod[int(k)]
                    first_estimate = a.sqrt() * x - (1 - a).sqrt() * v
                x = ddim_step(x, v, timesteps, torch.full_like(timesteps, int(k_next)), model.alphas_cumprod)
            if self.track_trust:
                self.disagreement = (first_estimate - x).float().square().mean(dim=(1, 2, 3, 4))
                self.change = (x - self.last_clean[:b]).float().square().mean(dim=(1, 2, 3, 4))
            self.gated = dropped[:, 0] & ~torch.as_tensor(drop_actions, device=model.device)
            self.num_generated += 1
            if not torch.isfinite(x).all():  # one check per frame; NaN latents would decode to black frames
                raise NonFiniteLatentsError(
                    f"the world model produced non-finite latents at generated frame {self.num_generated}; its weights or sampler "
                    f"settings are broken (num_steps={self.num_steps}, guidance_scale={self.guidance_scale})")
            hist = torch.full((b, 1), s.history_timestep, device=model.device, dtype=torch.long)
            noisy = add_noise(x, torch.randn(x.shape, device=model.device, generator=generator), hist, model.alphas_cumprod)
            self._add(noisy, hist, action, dropped, cond, clean=x)
        return x

    # ------------------------------------------------------------ internals
    def _repeat(self, *tensors):
        """Each tensor (or tuple of tensors, or None) with its rows repeated `rep` times (the tensors themselves for rep 1)."""
        if self.rep == 1:
            return list(tensors)
        one = lambda x: tuple(one(y) for y in x) if isinstance(x, tuple) else None if x is None else x.repeat(
            self.rep, *([1] * (x.dim() - 1)))
        return [one(x) for x in tensors]

    def _add(self, latents, timesteps, actions, dropped, cond, clean) -> None:
        """Append frames for every row: `latents` at history noise `timesteps`, `clean` without it."""
        self.last_clean = self._repeat(clean[:, -1:])[0]
        latents, timesteps, actions, dropped, cond = self._repeat(latents, timesteps, actions, dropped, cond)
        if self.use_cache:  # one pass writes the finished frames' keys and values
            with self.model.inference_autocast(latents.shape[0]):
                self.denoiser(latents, timesteps, actions, dropped, *cond, cache=self.cache, write_cache=True,
                              previous_first=self.last, return_output=False)
            self.last = latents[:, -1:]
            return
        self.last = latents[:, -1:]
        for i in range(latents.shape[1]):
            frame = lambda x: tuple(frame(y) for y in x) if isinstance(x, tuple) else None if x is None else x[:, i : i + 1]
            self.parts.append(frame((latents, timesteps, actions, dropped, cond)))
        s = self.model.sampler
        if s.window_frames is not None and len(self.parts) > s.window_frames:
            first = self.parts[:1] if s.keep_first_frame else []
            self.parts = first + self.parts[len(self.parts) - s.window_frames + len(first) :]

    def _predict(self, x, timesteps, action, cond, dropped: torch.Tensor) -> torch.Tensor:
        """v for the newest frame x (b, 1, C, h, w), with the null action where `dropped` (b, 1) is
        set; guided runs get [cond, uncond] stacked."""
        b = x.shape[0]
        x, timesteps, action, cond, dropped = self._repeat(x, timesteps, action, cond, dropped)
        if self.rep == 2:
            dropped[b:] = True  # the unconditional branch drops only the newest action
        if self.use_cache:  # under step()'s autocast context
            output = self.denoiser(x, timesteps, action, dropped, *cond, cache=self.cache, previous_first=self.last)
        else:
            seq = [torch.cat([p[j] for p in self.parts] + [new], dim=1) for j, new in enumerate((x, timesteps, action, dropped))]
            seq_cond = [None if new is None else torch.cat([p[4][j] for p in self.parts] + [new], dim=1) for j, new in enumerate(cond)]
            output = self.denoiser(*seq, *seq_cond)[:, -1:]
        return self.model.predicted_velocity(output.float(), x, timesteps, self.last_clean)


def _rows(x) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.as_tensor(x)
