"""Stage `evaluate` for task=causal_lm: test perplexity of models/finetuned and, on the same
blocks, of models/pretrained (all test texts, and the domain's); generations from
lm.generate.prompts (reports/evaluate/generations.{md,jsonl}, an MLflow text artifact and table,
and printed); the fine-tuning learning curves; the registered pyfunc model (text in, text out;
champion = lowest test perplexity), which refers to the weights in DVC's cache instead of copying them."""

from __future__ import annotations

import json
import logging

from transferlab.contracts import EVALUATE_METRICS as METRICS
from transferlab.contracts import FINETUNED, PLOTS, PRETRAINED, REPORTS, TRAINING_LOG
from transferlab.data import prepared
from transferlab.errors import UserError
from transferlab.models.positions import check_positions
from transferlab.tasks.causal_lm import corpus
from transferlab.training.curves import CURVE_PNG, write_learning_curves

log = logging.getLogger(__name__)


def mean_loss(net, blocks, batch_size: int, device: str) -> float:
    """Mean next-token cross-entropy over the blocks (every block has the same length)."""
    import torch

    net.to(device).eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start : start + batch_size].to(device)
            loss = net(input_ids=batch, labels=batch).loss.float().item()
            total += loss * len(batch)
            count += len(batch)
    return total / count


def markdown(cfg, rows: list[dict]) -> str:
    gen = cfg.lm.generate
    how = (
        f"sampling: temperature {gen.temperature}, top_k {gen.top_k}, top_p {gen.top_p}"
        if gen.do_sample
        else "greedy decoding"
    )
    lines = [
        f"# Generations: {cfg.model.name_or_path if cfg.model.init == 'pretrained' else cfg.model.arch}"
        f" ({cfg.model.init}), fine-tuned on {cfg.lm.domain or 'all'} text",
        "",
        f"{how}; max_new_tokens {gen.max_new_tokens}, repetition_penalty {gen.repetition_penalty}, "
        f"seed {gen.seed}",
        "",
    ]
    for row in rows:
        prompt = row["prompt"]  # an empty one: the model writes from nothing
        heading, bold = (prompt, f"**{prompt}**") if prompt.strip() else ("(empty prompt)", "")
        lines += [f"## {heading}", "", f"{bold}{row['generation']}", ""]
    return "\n".join(lines)


def run(cfg) -> dict:
    import pandas as pd
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transferlab.outputs import staged_outputs
    from transferlab.tasks.causal_lm.generate import generate
    from transferlab.tasks.causal_lm.model import register_architectures
    from transferlab.tasks.causal_lm.serving import TextGenerator, serving_config
    from transferlab.tasks.causal_lm.train import perplexity
    from transferlab.tracking import stage_run
    from transferlab.tracking.card import registry_description
    from transferlab.tracking.registry import publish
    from transferlab.training.runtime import resolve_device

    digest = prepared.files_digest([prepared.split_path("test")])
    with stage_run("evaluate", cfg, tags={"data.digest": digest, "task": cfg.task}) as run_log:
        device = resolve_device(cfg.device)
        run_log.set_tags({"device": device})
        if not (FINETUNED / "config.json").is_file():
            raise UserError(f"{FINETUNED} has no model: run the finetune stage first")
        check_positions(FINETUNED, cfg.model.max_length)  # by hand, after a max_length change
        run_log.link("finetune")
        prepared.log_splits(run_log, {"test": prepared.read_split("test")})
        register_architectures()
        trust = cfg.model.trust_remote_code
        net = AutoModelForCausalLM.from_pretrained(FINETUNED, trust_remote_code=trust)
        tok = AutoTokenizer.from_pretrained(FINETUNED, trust_remote_code=trust)
        limit, batch = cfg.lm.max_eval_blocks, cfg.evaluate.batch_size
        test_blocks = corpus.split_blocks("test", tok, cfg, limit=limit)
        domain_blocks = None
        if cfg.lm.domain:
            domain_blocks = corpus.split_blocks("test", tok, cfg, domain=cfg.lm.domain, limit=limit)
        metrics = {"block_size": cfg.model.max_length, "test_blocks": len(test_blocks)}
        # The same test blocks under the model before fine-tuning (models/pretrained): the gain.
        before = AutoModelForCausalLM.from_pretrained(PRETRAINED, trust_remote_code=trust)
        for prefix, model in (("", net), ("pretrained_", before)):
            loss = mean_loss(model, test_blocks, batch, device)
            metrics |= {f"{prefix}test_loss": round(loss, 6), f"{prefix}test_perplexity": perplexity(loss)}
            if domain_blocks is not None:
                loss = mean_loss(model, domain_blocks, batch, device)
                metrics |= {
                    f"{prefix}domain_test_loss": round(loss, 6),
                    f"{prefix}domain_test_perplexity": perplexity(loss),
                }
        del before
        if domain_blocks is not None:
            metrics |= {"domain": cfg.lm.domain, "domain_test_blocks": len(domain_blocks)}
        prompts = list(cfg.lm.generate.prompts)
        texts = generate(net, tok, prompts, cfg.lm.generate, device)
        rows = [{"prompt": p, "generation": t} for p, t in zip(prompts, texts, strict=True)]
        history = json.loads((FINETUNED / TRAINING_LOG).read_text())

        with staged_outputs() as outs:
            outs.path(METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
            write_learning_curves(outs.path(PLOTS, is_dir=True), history)
            reports = outs.path(REPORTS, is_dir=True)
            (reports / "generations.md").write_text(markdown(cfg, rows))
            (reports / "generations.jsonl").write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            )

        run_log.log_metrics({k: v for k, v in metrics.items() if k != "domain"})
        for artifact in (METRICS, PLOTS / CURVE_PNG, REPORTS / "generations.md"):
            run_log.log_artifact(artifact)
        run_log.log_table(pd.DataFrame(rows), "generations.json")
        run_log.set_tags({"test.digest": digest})
        example = pd.DataFrame({"text": ["…"] * min(2, len(prompts))})
        publish(
            run_log,
            cfg,
            FINETUNED,
            prompts[:2],
            metrics["test_perplexity"],
            digest,
            python_model=TextGenerator(),
            output_example=example,
            model_config=serving_config(cfg.lm.generate),
            params=serving_config(cfg.lm.generate),
            metric="test_perplexity",
            higher_is_better=False,
            weights_in_dvc=True,
            description=registry_description(
                FINETUNED,
                [
                    (key.replace("_", " "), metrics[key])
                    for key in (
                        "test_perplexity",
                        "pretrained_test_perplexity",
                        "domain_test_perplexity",
                        "pretrained_domain_test_perplexity",
                        "test_blocks",
                    )
                    if key in metrics
                ],
            ),
        )
    for row in rows:  # the stage's answer, on the console
        print(f"\n>>> {row['prompt']}{row['generation']}")
    print()
    log.info(
        "test perplexity %.2f (before fine-tuning %.2f)%s",
        metrics["test_perplexity"],
        metrics["pretrained_test_perplexity"],
        f"; {cfg.lm.domain} test perplexity {metrics['domain_test_perplexity']:.2f} (before "
        f"{metrics['pretrained_domain_test_perplexity']:.2f})"
        if cfg.lm.domain
        else "",
    )
    return metrics
