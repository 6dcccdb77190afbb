"""The recipe's optimisation loop, shared by its pre-training steps and stage 3.

AdamW (weight decay 0.01) over the given parameters, the learning rate warmed up and then decayed on
a cosine (qwen_vl.training.schedule, or a factor of the step's own), gradients clipped to norm 1.
Each step module gives the loss of one step and reports what it wants to log; the data, the
losses and the saving stay with it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qwen_vl.training.schedule import cosine_schedule


class Loop:
    """`steps` optimizer steps over `params`: `optimizer` and `schedule` are made here (a caller that
    wraps the optimizer, as accelerate does, puts the wrapped one back in `optimizer`)."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        steps: int,
        lr: float,
        warmup: int,
        betas: tuple[float, float] = (0.9, 0.95),
        factor: Callable[[int], float] | None = None,  # lr multiplier per step; default: cosine_schedule's
    ):
        self.params, self.steps = params, steps
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=betas)
        if factor is None:
            self.schedule = cosine_schedule(self.optimizer, warmup, steps)
        else:
            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    def run(
        self,
        step_loss: Callable[[int], torch.Tensor],
        report: Callable[[int, torch.Tensor], None] | None = None,
        backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
        clip: Callable[..., torch.Tensor] = torch.nn.utils.clip_grad_norm_,
    ) -> None:
        """Per step: `step_loss(step)` (the forward), `backward(loss)`, the gradients clipped to norm 1
        (`clip(params, 1.0)`), the optimizer's and the schedule's steps, then `report(step, loss)`."""
        for step in range(self.steps):
            loss = step_loss(step)
            backward(loss)
            clip(self.params, 1.0)
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            if report is not None:
                report(step, loss)
