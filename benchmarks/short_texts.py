"""Padding on short texts: `runtime.group_by_length` auto (grouped here) against random batches.

BBC articles all fill 128 tokens; a table of one-paragraph texts does not, and random batches are
padded to their longest text. This writes such a table from the BBC corpus (each article's first
paragraph after the headline, 5 topics), runs the pipeline on it in a throwaway clone once per
setting, and records real tokens/s of training and test accuracy (benchmarks/short_texts.json).

    python benchmarks/short_texts.py [--epochs 3] [--seeds 42 1 2] [--output FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import REPO, clone, machine, run, spread, stage_runs  # noqa: E402

SETTINGS = ("runtime.group_by_length=null", "runtime.group_by_length=false")


def write_table(path: Path) -> dict:
    """One row per BBC article: its first body paragraph and its topic."""
    from transferlab.data.sources import bbc_news

    rows = []
    for text, label in bbc_news()[["text", "label"]].itertuples(index=False):
        paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
        if len(paragraphs) > 1:
            rows.append({"text": paragraphs[1], "label": label})
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return {"rows": len(rows), "median_characters": statistics.median(len(r["text"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one run per seed and setting")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/short_texts.json")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "settings": {}}
    with tempfile.TemporaryDirectory(prefix="bench-short-") as folder:
        table = Path(folder) / "first_paragraphs.csv"
        results["data"] = write_table(table)
        for seed in args.seeds:
            for setting in SETTINGS:
                print(f"{setting} seed={seed} ...", flush=True)
                project = clone(
                    Path(folder) / f"{setting.replace('=', '-')}-{seed}",
                    [
                        "data=files",
                        f"data.path={table}",
                        f"finetune.epochs={args.epochs}",
                        f"seed={seed}",
                        setting,
                    ],
                )
                results["settings"].setdefault(setting, {"seeds": {}})["seeds"][seed] = run_once(project)
    for figures in results["settings"].values():
        for key in ("best_validation_accuracy", "test_accuracy", "train_seconds"):
            values = [run[key] for run in figures["seeds"].values()]
            figures[key] = {"mean": round(statistics.mean(values), 4), "values": values}
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def run_once(project: Path) -> dict:
    """The pipeline's stages in the clone, and what its MLflow runs recorded."""
    import mlflow

    for stage in ("prepare", "train", "finetune", "evaluate"):
        run("transferlab", stage, cwd=project)
    runs = stage_runs(project)
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    finetune = runs["finetune"]
    rates = [m.value for m in client.get_metric_history(finetune.info.run_id, "train_tokens_per_second")]
    return {
        "train_sampling": finetune.data.tags.get("train_sampling"),
        "precision": finetune.data.tags.get("precision"),
        "tokens_per_second": spread(rates, 1),
        "train_seconds": round(finetune.data.metrics["train_seconds"], 1),
        "best_validation_accuracy": finetune.data.metrics["best_validation_accuracy"],
        "test_accuracy": runs["evaluate"].data.metrics["test_accuracy"],
    }


if __name__ == "__main__":
    main()
