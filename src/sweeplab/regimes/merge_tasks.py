"""Several tasks in one merge: runs fine-tuned on different tasks share one merged backbone.

With ``regime.tasks=true`` every ingredient is one task: a run fine-tuned from the
common base on its own data (another data set, or a class subset through
``data.held_out_classes``, whose remaining labels are renumbered ``0..K-1``), with
its own classifier head. The merge combines everything but the heads; each task
keeps its head and is scored on its own test set, beside that task's own fine-tune
on the same samples. The ratio is the normalised accuracy of task arithmetic and
TIES (Ilharco et al. 2023, Yadav et al. 2023): 1.0 means the merge lost nothing on
that task.

A task is named by its data: ``data.name``, plus the classes it kept when some were
held out (``mnist_c0-2`` is MNIST's digits 0, 1 and 2), so the record's keys say
which task they belong to and a table spec can name them:

- ``merge/task/<task>/test/acc``: the merged backbone with the task's head;
- ``merge/task/<task>/test/finetune_acc``: the task's own fine-tune;
- ``merge/task/<task>/test/norm_acc``: their ratio;
- ``merge/tasks/test/{acc,finetune_acc,norm_acc}``: each one's mean over the tasks.

The ordinary evaluation (calibration, OOD) needs one data set and one head: it runs
on this run's own data, which must be one task's, with that task's head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sweeplab.tracking.runs import Run

PREFIX = "merge/task"
MEAN_PREFIX = "merge/tasks"
# Methods that merge whole models into one backbone; the others pick or interpolate
# whole runs by one task's val data.
TASK_METHODS = ("uniform", "task_arithmetic", "ties", "dare", "fisher")


def _ranges(classes: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``0-2_5``: consecutive runs of classes as ranges."""
    parts, start = [], None
    for index, value in enumerate(classes):
        if start is None:
            start = value
        last = index + 1 == len(classes) or classes[index + 1] != value + 1
        if last:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return "_".join(parts)


def task_name(data: Mapping[str, Any], num_classes: int) -> str:
    """The task of a run trained on ``data`` with ``num_classes`` outputs.

    ``num_classes`` counts the classes left after ``held_out_classes``, so the data
    set had ``num_classes + len(held_out_classes)`` and the task kept the others.
    """
    name = str(data.get("name") or "data")
    held = sorted(int(c) for c in (data.get("held_out_classes") or []))
    if not held:
        return name
    kept = [c for c in range(num_classes + len(held)) if c not in held]
    return f"{name}_c{_ranges(kept)}"


def task_names(runs: Sequence[Run]) -> list[str]:
    """One task name per run; two runs of one task are a one-line error."""
    from sweeplab.regimes.loading import model_input_of

    names = [
        task_name(run.config.get("data") or {}, model_input_of(run).num_classes) for run in runs
    ]
    seen: dict[str, str] = {}
    for run, name in zip(runs, names, strict=True):
        if name in seen:
            raise ValueError(
                f"regime.tasks=true: runs {seen[name]} and {run.run_id} are both fine-tunes of "
                f"task {name}; name one run per task in regime.runs"
            )
        seen[name] = run.run_id
    return names


def matching_task(runs: Sequence[Run], names: Sequence[str], this_data: Mapping | None) -> int:
    """The index of the task whose data is this run's (its head serves the ordinary
    evaluation); a one-line error when there is none."""
    from sweeplab.regimes.ensemble_from_runs import data_differences

    if this_data is None:
        return 0
    for index, run in enumerate(runs):
        if not data_differences([run.config, {"data": dict(this_data)}]):
            return index
    first = runs[0].config.get("data") or {}
    raise ValueError(
        f"regime.tasks=true: this run's data is none of the tasks' ({', '.join(names)}); "
        "the ordinary evaluation runs on one task with its head, so give this run one "
        f"task's data options (for {names[0]}: data={first.get('name')} "
        f"data.held_out_classes={list(first.get('held_out_classes') or [])} and its other "
        "data.* values); every task's results are under merge/task/…"
    )


def head_keys(model: nn.Module) -> set[str]:
    """State-dict names of the model's classifier head; none is a one-line error, since
    a task's head is what the merge keeps apart."""
    from sweeplab.regimes.init_from import head_keys as keys_of

    keys = keys_of(model)
    if not keys:
        raise ValueError(
            f"regime.tasks=true needs backbones with a classifier `head`; {type(model).__name__} "
            "has none"
        )
    return keys


def without(state: Mapping[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
    return {key: value for key, value in state.items() if key not in keys}


def summarise(accuracies: Mapping[str, float], finetuned: Mapping[str, float]) -> dict[str, float]:
    """Per-task and mean accuracy, fine-tune accuracy and normalised accuracy.

    ``accuracies[t]`` is the merged model's test accuracy on task ``t`` with its head,
    ``finetuned[t]`` that of task ``t``'s own fine-tune on the same samples; the
    normalised accuracy is their ratio (NaN when the fine-tune scores 0), and the
    mean is over the tasks of each ratio, not a ratio of means.
    """
    if set(accuracies) != set(finetuned) or not accuracies:
        raise ValueError(
            f"need the same tasks on both sides, got {sorted(accuracies)} and {sorted(finetuned)}"
        )
    metrics, ratios = {}, {}
    for task in sorted(accuracies):
        acc, own = float(accuracies[task]), float(finetuned[task])
        ratios[task] = acc / own if own > 0 else float("nan")
        metrics[f"{PREFIX}/{task}/test/acc"] = acc
        metrics[f"{PREFIX}/{task}/test/finetune_acc"] = own
        metrics[f"{PREFIX}/{task}/test/norm_acc"] = ratios[task]
    count = len(accuracies)
    metrics[f"{MEAN_PREFIX}/test/acc"] = sum(map(float, accuracies.values())) / count
    metrics[f"{MEAN_PREFIX}/test/finetune_acc"] = sum(map(float, finetuned.values())) / count
    metrics[f"{MEAN_PREFIX}/test/norm_acc"] = sum(ratios.values()) / count
    return metrics


@torch.no_grad()
def test_accuracy(body: nn.Module, head: nn.Module, datamodule) -> float:
    """Accuracy of ``head(body.features(x))`` on the test split of ``datamodule``."""
    from sweeplab.metrics.classification import accuracy

    images, labels = datamodule.split("test")
    device = next(body.parameters()).device
    body.eval()
    head.eval()
    size = int(getattr(datamodule, "eval_batch_size", 512))
    logits = []
    for start in range(0, labels.shape[0], size):
        x = datamodule.preprocess(images[start : start + size].to(device), train=False)
        logits.append(head(body.features(x)).cpu())
    return accuracy(torch.log_softmax(torch.cat(logits).double(), dim=-1), labels)


def mixed_train_images(
    datamodules: Sequence[Any], count: int, generator: torch.Generator
) -> Tensor:
    """``count`` preprocessed training images drawn evenly from every task, shuffled, so
    that each BatchNorm batch is a mixture of the tasks the backbone now serves."""
    shapes = {tuple(dm.image_shape) for dm in datamodules}
    if len(shapes) > 1:
        raise ValueError(
            f"regime.bn=recompute: the tasks' images differ in shape ({sorted(shapes)}), so "
            "BatchNorm cannot be recomputed on a mixture of them; set regime.bn=keep"
        )
    shares = [
        count // len(datamodules) + (i < count % len(datamodules)) for i in range(len(datamodules))
    ]
    chunks = []
    for dm, share in zip(datamodules, shares, strict=True):
        images, _ = dm.split("train")
        index = torch.randperm(images.shape[0], generator=generator)[:share]
        chunks.append(dm.preprocess(images[index], train=False))
    mixed = torch.cat(chunks)
    return mixed[torch.randperm(mixed.shape[0], generator=generator)]
