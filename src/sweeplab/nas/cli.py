"""``sweeplab nas search`` and ``sweeplab nas rank``: NAS over a finished supernet run.

``search`` finds the best subnet per budget on val and writes the searched
architectures, the Pareto front (data and picture) and the best per budget into the
supernet's run; ``rank`` trains K sampled subnets standalone (one sweep, or the runs
already in the store) and reports how well the supernet and the training-free
proxies rank them (Kendall τ, sparse τ, Spearman ρ with bootstrap intervals).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from sweeplab.files import atomic_write_text
from sweeplab.models.search_space import encode
from sweeplab.models.subnet_scoring import BN_POLICIES
from sweeplab.nas import ranking
from sweeplab.nas.inherited_eval import eval_command
from sweeplab.nas.plots import pareto_plot, ranking_plot
from sweeplab.nas.proxies import PROXIES
from sweeplab.nas.search import (
    METHODS,
    Budget,
    best_of,
    pareto_front,
    random_search,
    regularized_evolution,
)
from sweeplab.nas.supernet_run import SupernetRun
from sweeplab.tracking.layout import runs_dir_from_overrides
from sweeplab.tracking.record import now_iso, read_record, write_record
from sweeplab.tracking.runs import RunError

log = logging.getLogger("sweeplab.nas")

USAGE = """\
usage: sweeplab nas search run=<dir|id> [--mflops M ...] [--params P ...] [--method evolution|random]
                           [--samples N] [--seed S] [--bn-policy recalibrate|batch] [paths.root_dir=…]
       sweeplab nas rank run=<dir|id> [--k 8] [--seed S] [--launch] [--proxy-batch 64]
                           [paths.root_dir=…] [<train overrides for the standalone subnets> …]

search: the best subnet of a supernet run per budget, scored on val (never test). Each
  --mflops / --params value is one budget (given together, they pair up in order).
rank:   K sampled subnets trained standalone with the supernet's data and recipe, and
  Kendall τ, sparse τ and Spearman ρ of the supernet's (with and without BatchNorm
  recalibration) and each training-free proxy's scores against their val accuracy.
  --launch trains the missing subnets as one sweep; without it the command lists them.
"""


class NasError(Exception):
    """A NAS command that cannot go on; the message says why and what to do."""


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"sweeplab nas {command}", add_help=False)
    parser.add_argument("--seed", type=int, default=0)
    if command == "search":
        parser.add_argument("--mflops", type=float, nargs="+", default=[])
        parser.add_argument("--params", type=int, nargs="+", default=[])
        parser.add_argument("--method", choices=METHODS, default="evolution")
        parser.add_argument("--samples", type=int, default=100)
        parser.add_argument("--population", type=int, default=16)
        parser.add_argument("--bn-policy", choices=BN_POLICIES, default=None)
    else:
        parser.add_argument("--k", type=int, default=8)
        parser.add_argument("--launch", action="store_true")
        parser.add_argument("--proxy-batch", type=int, default=64)
    return parser


def budgets_of(mflops: list[float], params: list[int]) -> list[Budget]:
    """One budget per value; ``--mflops`` and ``--params`` of equal length pair up."""
    if mflops and params and len(mflops) != len(params):
        raise NasError(
            "give --mflops and --params the same number of values to pair them up, or only one"
        )
    if any(m <= 0 for m in mflops) or any(p <= 0 for p in params):
        raise NasError("budgets must be positive")
    if mflops and params:
        return [Budget(m, p) for m, p in zip(mflops, params, strict=True)]
    return [Budget(max_mflops=m) for m in mflops] + [Budget(max_params=p) for p in params] or [
        Budget()
    ]


def _update_record(
    nas: SupernetRun, metrics: dict[str, float], section: str, value: Any, artifacts
) -> None:
    record = read_record(nas.run.path)
    record["metrics"] = {**record.get("metrics", {}), **metrics}
    record.setdefault("nas", {})[section] = value
    record.setdefault("artifacts", {}).update(artifacts)
    record["nas_updated"] = now_iso()
    write_record(nas.run.path, record)


def _train_command(overrides: list[str]) -> str:
    return "sweeplab train " + " ".join(shlex.quote(o) for o in overrides)


# ------------------------------------------------------------------------ search
def search(nas: SupernetRun, budgets: list[Budget], args, store: list[str] = ()) -> dict[str, Any]:
    """Search under every budget; writes nas/search.json, nas/pareto.json and the picture.

    ``store`` (the command's ``paths.*`` overrides) goes into the printed eval commands,
    so that they find the supernet where this search did."""
    costs = nas.costs()
    scorer = nas.scorer(args.bn_policy)
    space = nas.supernet.space
    if args.samples < 1:
        raise NasError("--samples must be at least 1")
    results, everything = [], {}
    for budget in budgets:
        generator = torch.Generator().manual_seed(args.seed)
        try:
            if args.method == "random":
                found = random_search(space, scorer, costs, budget, args.samples, generator)
            else:
                found = regularized_evolution(
                    space, scorer, costs, budget, args.samples, generator, args.population
                )
        except ValueError as exc:
            raise NasError(str(exc)) from None
        everything.update({c.arch: c for c in found})
        best = best_of(found)
        results.append({"budget": budget, "best": best, "searched": len({c.arch for c in found})})
    costs.save()
    candidates = sorted(everything.values(), key=lambda c: c.flops)
    front = pareto_front(candidates)
    data = {
        "run": nas.run.run_id,
        "method": args.method,
        "samples": args.samples,
        "seed": args.seed,
        "bn_policy": scorer.policy,
        "split": "val",
        "budgets": [
            {
                "budget": r["budget"].describe(),
                "max_mflops": r["budget"].max_mflops,
                "max_params": r["budget"].max_params,
                "best": r["best"].__dict__,
                "command": _train_command(nas.subnet_overrides(r["best"].arch)),
                "command_from_supernet": _train_command(
                    nas.subnet_overrides(r["best"].arch, [f"init_from={nas.run.run_id}"])
                ),
                "eval_command": eval_command(
                    nas.run.run_id,
                    r["best"].arch,
                    None if scorer.policy == nas.regime.bn_policy else scorer.policy,
                    store,
                ),
            }
            for r in results
        ],
        "candidates": [c.__dict__ for c in candidates],
        "pareto": [c.__dict__ for c in front],
    }
    nas.nas_dir.mkdir(exist_ok=True)
    atomic_write_text(nas.nas_dir / "search.json", json.dumps(data, indent=1))
    atomic_write_text(nas.nas_dir / "pareto.json", json.dumps(data["pareto"], indent=1))
    artifacts = {"nas_search": "nas/search.json", "nas_pareto": "nas/pareto.json"}
    artifacts["nas_pareto_plot"] = _pareto_plot(nas, data)
    metrics = {}
    for r in results:
        key, best = r["budget"].key(), r["best"]
        metrics[f"nas/search/{key}/val_acc"] = best.val_acc
        metrics[f"nas/search/{key}/mflops"] = best.mflops
        metrics[f"nas/search/{key}/params"] = float(best.params)
    _update_record(
        nas, metrics, "search", {b["budget"]: b["best"]["arch"] for b in data["budgets"]}, artifacts
    )
    return data


def _pareto_plot(nas: SupernetRun, data: dict[str, Any]) -> str:
    path = nas.run.plots_dir / "nas_pareto.png"
    title = f"supernet {nas.run.run_id}: searched subnets"
    pareto_plot(data["candidates"], data["pareto"], data["budgets"], path, title)
    return str(path.relative_to(nas.run.path))


def _print_search(data: dict[str, Any]) -> None:
    print(
        f"searched supernet {data['run']} by {data['method']} ({data['samples']} samples per "
        f"budget, BatchNorm: {data['bn_policy']}, scored on val)"
    )
    for entry in data["budgets"]:
        best = entry["best"]
        print(
            f"  {entry['budget']}: {best['arch']}  val acc {best['val_acc']:.4f}  "
            f"{best['flops'] / 1e6:.3g} MFLOPs  {best['params']:,} params"
        )
        print(f"    evaluate it with inherited weights: {entry['eval_command']}")
        print(f"    train it standalone: {entry['command']}")
    print(f"  Pareto front: {len(data['pareto'])} of {len(data['candidates'])} subnets")


# ------------------------------------------------------------------------ rank
def sample_distinct(space, k: int, seed: int) -> list:
    """``k`` distinct architectures drawn uniformly from a seeded stream."""
    if k < 3:
        raise NasError("--k must be at least 3 to rank subnets")
    if k > space.size():
        raise NasError(f"--k {k} is more than the {space.size()} architectures of the space")
    generator = torch.Generator().manual_seed(seed)
    archs: dict[str, Any] = {}
    while len(archs) < k:
        arch = space.sample(generator)
        archs.setdefault(encode(arch), arch)
    return list(archs.values())


def _standalone_runs(nas: SupernetRun, archs: list[str], extra: list[str]):
    """Per architecture: its overrides, run directory and record (or None)."""
    from sweeplab.search import SearchError, compose_train
    from sweeplab.tracking.identity import compute_run_id

    slots = []
    for arch in archs:
        overrides = nas.subnet_overrides(arch, extra)
        try:
            cfg = compose_train(overrides)
        except SearchError as exc:
            raise NasError(f"the standalone subnet {arch} does not compose: {exc}") from None
        run_dir = Path(cfg.paths.runs_dir) / cfg.name / compute_run_id(cfg)
        slots.append((arch, overrides, run_dir, read_record(run_dir)))
    return slots


def _launch(slots) -> None:
    missing = [s for s in slots if not (s[3] and s[3].get("status") == "complete")]
    if not missing:
        return
    common = [o for o in missing[0][1] if not o.startswith("backbone.arch=")]
    archs = ",".join(s[0] for s in missing)
    command = [sys.executable, "-m", "sweeplab", "train", "-m", *common, f"backbone.arch={archs}"]
    log.info("training %d standalone subnets as one sweep", len(missing))
    subprocess.run(command, check=False)


def rank(nas: SupernetRun, args, extra: list[str]) -> dict[str, Any]:
    space = nas.supernet.space
    archs = [encode(a) for a in sample_distinct(space, args.k, args.seed)]
    slots = _standalone_runs(nas, archs, extra)
    if args.launch:
        _launch(slots)
        slots = _standalone_runs(nas, archs, extra)
    missing = [s for s in slots if not (s[3] and s[3].get("status") == "complete")]
    if missing:
        common = [o for o in missing[0][1] if not o.startswith("backbone.arch=")]
        archs_text = ",".join(s[0] for s in missing)
        raise NasError(
            f"{len(missing)} of {len(slots)} standalone subnets are not trained yet; add --launch, "
            f"or run: {_train_command(['-m', *common, f'backbone.arch={archs_text}'])}"
        )
    standalone = []
    for _arch, _, run_dir, record in slots:
        value = (record.get("metrics") or {}).get("val/cls/acc")
        if not isinstance(value, int | float):
            raise NasError(
                f"standalone run {run_dir} has no val/cls/acc; it was trained without val"
            )
        standalone.append(float(value))
    scores: dict[str, list[float]] = {}
    for policy in BN_POLICIES:
        scorer = nas.scorer(policy)
        scores[f"supernet_{policy}"] = [scorer(space.decode(a)) for a in archs]
    images, labels = nas.datamodule.split("train")
    generator = torch.Generator().manual_seed(args.seed)
    index = torch.randperm(labels.shape[0], generator=generator)[: args.proxy_batch]
    x = nas.datamodule.preprocess(images[index], train=False)
    y = labels[index]
    for name, proxy in PROXIES.items():
        scores[name] = [proxy(nas.supernet.blank_subnet(a, seed=args.seed), x, y) for a in archs]
    costs = nas.costs()
    scores["flops"] = [float(costs(space.decode(a)).flops) for a in archs]
    costs.save()
    report = {
        name: ranking.rank_report(values, standalone, args.seed) for name, values in scores.items()
    }
    data = {
        "run": nas.run.run_id,
        "k": args.k,
        "seed": args.seed,
        "split": "val",
        "archs": archs,
        "standalone_runs": [str(s[2].name) for s in slots],
        "standalone_val_acc": standalone,
        "scores": scores,
        "report": report,
    }
    nas.nas_dir.mkdir(exist_ok=True)
    atomic_write_text(nas.nas_dir / "ranking.json", json.dumps(data, indent=1))
    artifacts = {"nas_ranking": "nas/ranking.json"}
    artifacts["nas_ranking_plot"] = _ranking_plot(nas, data)
    metrics = {"nas/rank/k": float(args.k)}
    for name, measures in report.items():
        for measure, value in measures.items():
            metrics[f"nas/rank/{name}/{measure}"] = value
    _update_record(
        nas,
        metrics,
        "ranking",
        {"archs": archs, "standalone_runs": data["standalone_runs"]},
        artifacts,
    )
    return data


def _ranking_plot(nas: SupernetRun, data: dict[str, Any]) -> str:
    path = nas.run.plots_dir / "nas_ranking.png"
    ranking_plot(data, path, f"supernet {nas.run.run_id}: ranking of {data['k']} subnets")
    return str(path.relative_to(nas.run.path))


def _print_rank(data: dict[str, Any]) -> None:
    print(
        f"ranking of {data['k']} subnets of supernet {data['run']} against standalone val accuracy"
    )
    print(f"  {'scorer':<24} {'Kendall τ [95% CI]':<26} {'sparse τ':>9} {'Spearman ρ':>11}")
    for name, r in data["report"].items():
        interval = (
            f"{r['kendall_tau']:+.2f} [{r['kendall_tau_low']:+.2f}, {r['kendall_tau_high']:+.2f}]"
        )
        print(
            f"  {name:<24} {interval:<26} {r['sparse_kendall_tau']:>+9.2f} {r['spearman']:>+11.2f}"
        )


# ------------------------------------------------------------------------ entry
def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help") or args[0] not in ("search", "rank"):
        print(
            USAGE, file=sys.stdout if args and args[0] in ("-h", "--help", "help") else sys.stderr
        )
        return 0 if args and args[0] in ("-h", "--help", "help") else 2
    command, rest = args[0], args[1:]
    if any(a in ("-h", "--help") for a in rest):
        print(USAGE)
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    specs = [a for a in rest if a.startswith("run=")]
    options = [a for a in rest if a.startswith("-") or _follows_option(rest, a)]
    overrides = [a for a in rest if a not in specs and a not in options]
    if len(specs) != 1:
        print(f"sweeplab nas {command}: give exactly one run=<dir|id>\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        parsed = _parser(command).parse_args(options)
    except SystemExit:
        return 2
    store = [o for o in overrides if o.startswith(("paths.root_dir=", "paths.runs_dir="))]
    try:
        nas = SupernetRun.open(specs[0].partition("=")[2], runs_dir_from_overrides(store))
        if command == "search":
            budgets = budgets_of(parsed.mflops, parsed.params)
            _print_search(search(nas, budgets, parsed, store))
        else:
            _print_rank(rank(nas, parsed, overrides))
    except (NasError, RunError) as exc:
        print(f"sweeplab nas {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _follows_option(args: list[str], arg: str) -> bool:
    """Whether ``arg`` is a value of a ``--option`` (the values follow it, up to the next
    ``key=value`` or option)."""
    if "=" in arg:  # key=value is an override (or run=…), never an option's value
        return False
    index = args.index(arg)
    for previous in reversed(args[:index]):
        if previous.startswith("--"):
            return previous not in ("--launch",)
        if "=" in previous:
            return False
    return False
