"""Console script: `transferlab prepare|train|finetune|evaluate` (the DVC stages),
`transferlab compose` (conf/ -> params.yaml), `transferlab run` (`dvc repro` under one MLflow
parent run: what `make run` does), `transferlab tune` (parallel Optuna workers) and
`transferlab report` (the comparison table).
Heavy libraries load only inside the commands."""

from __future__ import annotations

import argparse
import logging
import sys

from transferlab import interrupts
from transferlab.errors import UserError
from transferlab.stages import STAGES


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="transferlab", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, _) in STAGES.items():
        stage = commands.add_parser(name, help=summary, description=summary)
        stage.add_argument("--params", default="params.yaml", help="config file (default: %(default)s)")
    compose = commands.add_parser(
        "compose",
        help="compose conf/ with Hydra overrides and write params.yaml",
        description="Compose conf/ as `dvc exp run -S` does, run the value checks the stages run, "
        "and write the result (only when it passes them).",
    )
    compose.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=scratch finetune.backbone_lr=3e-5"
    )
    compose.add_argument("--config-dir", default="conf", help="(default: %(default)s)")
    compose.add_argument("--output", "-o", default="params.yaml", help="(default: %(default)s; - for stdout)")
    pipeline = commands.add_parser(
        "run",
        help="`dvc repro` under one parent MLflow run (what `make run` does)",
        description="Run `dvc repro [ARGS]` with every stage that runs logged as a child of one "
        "MLflow parent run; stages DVC skips are linked to the runs that made their outputs.",
    )
    pipeline.add_argument(
        "dvc_args",
        nargs=argparse.REMAINDER,
        help="passed on to `dvc repro`; options after --, e.g. run -- --force",
    )
    pipeline.add_argument("--params", default="params.yaml", help="(default: %(default)s)")
    tune = commands.add_parser(
        "tune",
        help="Optuna search: N worker processes on one study, bad trials pruned (docs/sweeps.md)",
        description="Run N Optuna workers on one study (hparams_search=..., default finetune_optuna): "
        "each asks a trial as soon as its last one ended and runs the stages in-process; the "
        "fine-tuning reports sweep.objective every epoch and the pruner (sweep.pruner.*) stops "
        "bad trials. Ends at sweep.trials finished trials; the same command again resumes.",
    )
    tune.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep.trials=20 experiment=tiny")
    tune.add_argument("--workers", "-j", type=int, default=1, help="worker processes (default: %(default)s)")
    report = commands.add_parser(
        "report",
        help="comparison table + plot from the MLflow runs (reports/comparison.*)",
        description="Collect the finished runs of the comparison experiments from MLflow and write "
        "reports/comparison.md and reports/comparison.png: mean ± sd over the seeds, and "
        "paired tests against the TF-IDF baseline on the same test articles. Nothing is re-run.",
    )
    report.add_argument("experiments", nargs="*", help="experiment configs (default: the comparison set)")
    report.add_argument("--config-dir", default="conf", help="(default: %(default)s)")
    report.add_argument("--output", default="reports", help="(default: %(default)s)")
    report.add_argument(
        "--list",
        action="store_true",
        help="print the default comparison set (what `make compare` runs) and exit",
    )
    report.add_argument(
        "--check",
        action="store_true",
        help="only compose every experiment with every seed and run the stages' checks (what "
        "`make compare` does before it queues anything); no MLflow",
    )
    report.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        metavar="SEED",
        help="the seeds each experiment ran with (`make compare SEEDS=...`), e.g. "
        "--seeds 1 2 3 (default: the config's seed)",
    )
    return root


def report_command(args) -> None:
    from transferlab import report

    if args.list:
        print(*report.DEFAULT_EXPERIMENTS)
        return
    if args.check:
        report.check(args.experiments or report.DEFAULT_EXPERIMENTS, args.config_dir, args.seeds)
        return
    report.run(args.experiments or report.DEFAULT_EXPERIMENTS, args.config_dir, args.output, args.seeds)


def compose_command(args) -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    from transferlab.config.compose import compose, to_yaml
    from transferlab.config.load import validated

    text = to_yaml(compose(args.overrides, args.config_dir))
    validated(OmegaConf.create(text), "composed config")  # the checks the stages run, for -o - too
    if args.output == "-":
        sys.stdout.write(text)
        return
    output = Path(args.output)
    if output.is_dir():
        raise UserError(
            f"-o {args.output} is a folder: name the file to write, e.g. -o {output / 'params.yaml'}"
        )
    if blocking := next((p for p in output.parents if p.exists() and not p.is_dir()), None):
        raise UserError(f"-o {args.output}: {blocking} is a file, not a folder")
    tmp = output.with_name(output.name + ".tmp-compose")
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
    except BaseException as err:
        if tmp.is_file():
            tmp.unlink()
        if isinstance(err, OSError):
            raise UserError(f"cannot write -o {args.output}: {err.strerror or err}") from None
        raise
    if args.overrides:  # DVC's Hydra integration starts again from conf/: say so before it surprises
        given = " ".join(
            f"-S {override!r}" if " " in override else f"-S {override}" for override in args.overrides
        )
        print(
            f"transferlab compose: wrote {args.output}; `dvc exp run` composes conf/ again with only "
            f"its own -S values: give it these too ({given}), or make them a conf/experiment/ file",
            file=sys.stderr,
        )


def run_stage(stage: str, params: str) -> None:
    """One stage; when it fails under DVC, which deleted its outputs before it started, the last
    good ones come back from DVC's cache (one line says so) before the failure is reported."""
    from transferlab import stages
    from transferlab.config.load import load_params
    from transferlab.outputs import keep_only_if_unchanged

    keep_only_if_unchanged(params)
    try:
        stages.run(stage, load_params(params))
    except BaseException:
        from transferlab.outputs import restore_last_good

        try:
            restored = restore_last_good()
        except Exception as err:  # never hide the stage's own failure behind this one
            restored = []
            print(
                f"transferlab {stage}: could not put back the last good outputs ({err}); "
                "`dvc checkout` restores them",
                file=sys.stderr,
            )
        if restored:
            print(
                f"transferlab {stage}: put back the last good outputs: {', '.join(restored)}",
                file=sys.stderr,
            )
        raise


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    interrupts.install()  # a Ctrl-C waits for the MLflow write it lands in
    try:
        if args.command == "compose":
            compose_command(args)
        elif args.command == "report":
            report_command(args)
        elif args.command == "tune":
            from transferlab.tuning import tune

            return tune(args.overrides, args.workers)
        elif args.command == "run":
            import shutil

            from transferlab.config.load import load_params
            from transferlab.tracking import pipeline_run

            if shutil.which("dvc") is None:
                raise UserError("dvc is not on PATH: activate the venv (source .venv/bin/activate)")
            dvc_args = args.dvc_args[1:] if args.dvc_args[:1] == ["--"] else args.dvc_args
            return pipeline_run(load_params(args.params), ["dvc", "repro", *dvc_args])
        else:
            run_stage(args.command, args.params)
    except UserError as err:
        print(f"transferlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"transferlab {args.command}: interrupted; no outputs were replaced", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
