"""The `student` stage: the teacher's first N blocks, distilled from the frozen teacher.

loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(teacher/T || student/T), the KL
over every pixel with imagery: the teacher labels the pixels the observations do not.
With ``distill.feature_weight`` > 0, plus that weight times the MSE between the student's
tokens and the teacher's tokens after the same number of blocks (feature matching).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from instageo.model import tasks
from instageo.model.network import cut_student
from instageo.model.train import batch_mean, fit, seed_everything
from instageo.recipe.models import Recipe
from instageo.runner import ranks
from instageo.runner.stage import StageContext, StageOutput, StageResult


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    chips, student_spec = inputs["chips"], recipe.student
    teacher, meta = tasks.load(inputs["teacher"].path("model"))
    data = tasks.splits(recipe, chips, meta["normalization"])  # what the teacher saw
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    seed_everything(recipe.seed)
    student = cut_student(teacher, student_spec.depth, copy_head=student_spec.head == "copy")
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    loss = distillation_loss(recipe, tasks.supervised_loss(recipe, chips), teacher)
    result = fit(_WithTokens(student), data, student_spec.train, loss, tasks.val_score(recipe),
                 recipe.seed, ctx.workdir, ctx.bar, ctx.log)
    student.load_state_dict(result.state)
    if ranks.is_main():  # under accelerate launch the other processes write nothing
        tasks.save(ctx.workdir / "student.pt", student, {**meta, "depth": student_spec.depth})
        (ctx.workdir / "train_state.pt").unlink(missing_ok=True)
    evaluation = tasks.summary(student, data, recipe, student_spec.train.batch_size)
    return StageOutput(
        files={"model": "student.pt"},
        summary={"student_depth": student_spec.depth, **evaluation, "best_epoch": result.best_epoch,
                 "precision": result.precision, "processes": result.processes},
    )


class _WithTokens(torch.nn.Module):
    """The student in training: its output, plus its tokens for feature matching. Scoring and
    saving see the plain student (``module``), whose weights these are."""

    def __init__(self, student):
        super().__init__()
        self.module = student

    def forward(self, x, temporal=None, location=None):
        tokens = self.module.encoder(x, temporal=temporal, location=location)
        return self.module.decode(tokens, x.shape[-2:]), tokens

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state, *args, **kwargs):
        return self.module.load_state_dict(state, *args, **kwargs)


def distillation_loss(recipe: Recipe, supervised, teacher):
    distill = recipe.student.distill
    alpha, temperature, depth = distill.alpha, distill.temperature, recipe.student.depth

    def loss(output, y, valid, inputs):
        out, tokens = output
        x, temporal, location = inputs
        teacher.to(out.device)
        with torch.no_grad():
            target = teacher(x, temporal, location).float()
            matched = (teacher.encoder(x, depth, temporal, location) if distill.feature_weight > 0 else None)
        out = out.float()
        if tasks.regression(recipe):
            soft = batch_mean(((out[:, 0][valid] - target[:, 0][valid]) ** 2).sum(), valid.sum())
            total = alpha * supervised(out, y, valid, inputs) + (1 - alpha) * soft
        else:
            log_student = F.log_softmax(out / temperature, dim=1)
            log_teacher = F.log_softmax(target / temperature, dim=1)
            kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)  # (B, H, W)
            soft = batch_mean(kl[valid].sum(), valid.sum())
            total = alpha * supervised(out, y, valid, inputs) + (1 - alpha) * temperature**2 * soft
        if matched is not None:
            squared = (tokens.float() - matched.float()) ** 2
            total = total + distill.feature_weight * batch_mean(squared.sum(), torch.tensor(squared.numel()))
        return total

    return loss
