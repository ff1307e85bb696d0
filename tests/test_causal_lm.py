"""task=causal_lm: config choices, block packing, the decoders (Hugging Face and torch.nn),
reproducible generation, the GGUF conversion of the real SmolLM2 package, and the whole pipeline
through the real DVC CLI with a tiny scratch GPT-2 (checkpoint, perplexity, generations, MLflow,
registry, REST serving)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import copy_project, copy_tiny, make_config, serve_and_post, sh
from transferlab.errors import UserError

TEXTS = ["the cat sat on the mat. " * 20, "a dog ran in the park. " * 20, "birds sing at dawn. " * 20]


def greedy(**overrides):
    settings = {
        "max_new_tokens": 12,
        "do_sample": False,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "seed": 7,
    }
    return SimpleNamespace(**(settings | overrides))


def tiny_decoder(arch: str):
    """A random-weight decoder of the given arch with a BPE tokenizer learnt on TEXTS."""
    from transformers import set_seed

    from transferlab.tasks.causal_lm import model as decoders

    cfg = make_config("experiment=lm_tiny", f"model.arch={arch}")
    tok = decoders.tokenizer(cfg.model, TEXTS)
    set_seed(0)
    return decoders.decoder(cfg.model, tok), tok, cfg


# --- config ------------------------------------------------------------------------------------


def test_task_causal_lm_defaults_to_smollm2_and_its_own_registry_name():
    cfg = make_config("task=causal_lm")
    assert cfg.task == "causal_lm" and cfg.model.name_or_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert cfg.tracking.registered_model == "transferlab-lm"
    assert cfg.lm.generate.prompts[0] == "Once upon a time"
    assert make_config().task == "classification"
    scratch = make_config("task=causal_lm", "model=scratch_gpt")
    assert scratch.model.arch == "gpt2" and scratch.model.init == "scratch" and scratch.train.steps > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("task=causal_lm", "model=minilm"), "MiniLM is an encoder"),
        (("task=causal_lm", "model=scratch"), "needs a decoder"),
        (("model=scratch_gpt",), "is a decoder language model: use task=causal_lm"),
        (("model=smollm2",), "GGUF decoder language model"),
        (("task=causal_lm", "lm.max_eval_blocks=0"), "lm.max_eval_blocks=0 must be >= 1"),
        (("task=causal_lm", "lm.generate.top_p=1.5"), "top_p=1.5 must be in"),
        (("task=causal_lm", "lm.generate.max_new_tokens=0"), "max_new_tokens=0 must be > 0"),
        (("task=regression",), "task"),
    ],
)
def test_a_task_and_model_that_do_not_fit_fail_with_one_clear_message(overrides, message):
    with pytest.raises(UserError, match=message):
        make_config(*overrides)


# --- corpus --------------------------------------------------------------------------------------


def test_texts_are_packed_into_full_blocks_separated_by_end_of_text():
    from transferlab.tasks.causal_lm import model as decoders
    from transferlab.tasks.causal_lm.corpus import pack

    tok = decoders.train_bpe(TEXTS, 300)
    stream = [i for t in TEXTS for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    blocks = pack(TEXTS, tok, 16)
    assert blocks.shape == (len(stream) // 16, 16)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    assert (blocks == tok.eos_token_id).sum() >= 2  # the boundaries between texts are marked
    sample = pack(TEXTS, tok, 16, limit=3, seed=1)
    assert sample.shape == (3, 16) and sample.equal(pack(TEXTS, tok, 16, limit=3, seed=1))
    rows = {tuple(r) for r in blocks.tolist()}
    assert all(tuple(r) in rows for r in sample.tolist())
    with pytest.raises(UserError, match="do not fill one block"):
        pack(["hi"], tok, 64)


def test_unlabelled_text_files_and_folders_become_the_corpus(tmp_path):
    from transferlab.data import sources

    story = tmp_path / "story.txt"
    story.write_text("First paragraph.\nStill first.\n\nSecond one.\r\n\r\nThird.\n\n\n")
    frame = sources.load(make_config("data=text", f"data.path={story}").data)
    assert frame["text"].tolist() == ["First paragraph.\nStill first.", "Second one.", "Third."]
    assert set(frame["label"]) == {"all"}
    (tmp_path / "lines.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n')
    frame = sources.load(
        make_config("data=text", f"data.path={tmp_path / 'lines.jsonl'}", "data.text_column=body").data
    )
    assert frame.to_dict("records") == [{"text": "one", "label": "all"}, {"text": "two", "label": "all"}]
    (tmp_path / "books" / "poems").mkdir(parents=True)
    (tmp_path / "books" / "poems" / "a.txt").write_text("roses are red")
    (tmp_path / "books" / "loose.txt").write_text("no topic")
    frame = sources.load(make_config("data=text", f"data.path={tmp_path / 'books'}").data)
    assert sorted(map(tuple, frame.to_numpy().tolist())) == [("no topic", "all"), ("roses are red", "poems")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .txt files"):
        sources.load(make_config("data=text", f"data.path={tmp_path / 'empty'}").data)


def test_a_local_text_file_trains_finetunes_and_generates_in_process(workdir):
    from transferlab import stages

    paragraphs = [f"Story {i}. Once upon a time a fox met a crow near river {i}. " * 3 for i in range(30)]
    (workdir / "stories.txt").write_text("\n\n".join(paragraphs))
    cfg = make_config(
        "experiment=lm_tiny",
        "data=text",
        "data.path=stories.txt",
        "lm.domain=null",
        "tracking.enabled=false",
        "model.arch=torch_decoder",
    )
    stages.run("prepare", cfg)
    assert stages.run("train", cfg)["validation_perplexity"] > 1
    tuned = stages.run("finetune", cfg)
    assert tuned["domain"] == "all" and tuned["validation_perplexity_after"] > 1
    metrics = stages.run("evaluate", cfg)
    assert metrics["test_perplexity"] > 1 and "domain_test_perplexity" not in metrics
    assert json.loads((workdir / "metrics/evaluate.json").read_text()) == metrics
    assert (workdir / "reports/evaluate/generations.md").read_text().count("**Once upon a time**") == 1
    bad = make_config(
        "experiment=lm_tiny", "data=text", "data.path=stories.txt", "lm.domain=tech", "tracking.enabled=false"
    )
    with pytest.raises(UserError, match="lm.domain='tech' is not a label"):
        stages.run("finetune", bad)


# --- decoders and generation ------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama", "torch_decoder"])
def test_greedy_generation_is_the_argmax_path_and_is_deterministic(arch):
    import torch

    from transferlab.tasks.causal_lm.generate import generate

    net, tok, _ = tiny_decoder(arch)
    first = generate(net, tok, ["the cat", "a dog"], greedy())
    assert first == generate(net, tok, ["the cat", "a dog"], greedy())
    assert generate(net, tok, ["a dog"], greedy()) == first[1:]  # independent of the other prompts
    ids = tok("the cat", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        for _ in range(12):  # greedy by hand: append the most likely next token
            ids = torch.cat([ids, net(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert tok.decode(ids[0, len(tok("the cat")["input_ids"]) :], skip_special_tokens=True) == first[0]


@pytest.mark.parametrize(
    "arch, embeddings",
    [
        ("gpt2", {"transformer.wte.weight", "transformer.wpe.weight"}),
        ("llama", {"model.embed_tokens.weight"}),
        ("torch_decoder", {"decoder.tokens.weight", "decoder.positions.weight"}),
    ],
)
def test_the_fine_tuning_options_see_a_decoders_embeddings_and_layers(arch, embeddings):
    from transferlab.training import freezing

    net, _, cfg = tiny_decoder(arch)
    parts = freezing.split(net)
    assert {name for name, _ in parts.embeddings} == embeddings
    assert len(parts.layers) == cfg.model.num_layers and all(parts.layers)
    assert parts.head == []  # the LM head is the (tied) input embedding matrix
    frozen = freezing.freeze(parts, embeddings=True, layers=1, patterns=[], backbone=False)
    assert set(frozen) == embeddings | {name for name, _ in parts.layers[0]}
    assert all(p.requires_grad for name, p in parts.all() if name not in frozen)


def test_sampling_is_reproducible_for_a_seed_and_changes_with_it():
    from transferlab.tasks.causal_lm.generate import generate

    net, tok, _ = tiny_decoder("gpt2")
    sample = greedy(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16)
    text = generate(net, tok, ["the cat"], sample)
    assert text == generate(net, tok, ["the cat"], sample)
    assert text != generate(net, tok, ["the cat"], greedy(**{**vars(sample), "seed": 8}))


def test_the_torch_decoder_is_causal_and_round_trips_through_the_auto_classes(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from transferlab.models.torch_decoder import TorchDecoderForCausalLM

    net, tok, _ = tiny_decoder("torch_decoder")
    assert isinstance(net, TorchDecoderForCausalLM)
    assert net.lm_head.weight is net.decoder.tokens.weight  # tied to the token embeddings
    net.eval()
    ids = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % len(tok)
    with torch.inference_mode():
        a, b = net(input_ids=ids).logits, net(input_ids=changed).logits
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-5), "a position saw a later token"
    assert not torch.allclose(a[:, 8:], b[:, 8:])
    loss = net(input_ids=ids, labels=ids).loss
    assert loss.item() > 0 and loss.requires_grad
    net.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.inference_mode():
        assert again(input_ids=ids).logits.equal(a)


# --- the real SmolLM2 GGUF package ------------------------------------------------------------


def test_the_smollm2_gguf_file_converts_to_a_checkpoint_that_loads_and_predicts_the_same(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transferlab.config.schema import SMOLLM2
    from transferlab.packages import resolve
    from transferlab.tasks.causal_lm import model as decoders

    cfg = make_config("task=causal_lm")
    assert cfg.model.name_or_path == SMOLLM2
    gguf = Path(resolve(SMOLLM2))
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    with pytest.raises(ValueError):  # why the conversion exists (transformers 5.23)
        reference.save_pretrained(tmp_path / "direct")
    net = decoders.decoder(cfg.model, None)
    tok = decoders.tokenizer(cfg.model)
    net.save_pretrained(tmp_path / "checkpoint")
    tok.save_pretrained(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "model.safetensors").stat().st_size > 500e6  # fp32, 135M weights
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").eval()
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path / "checkpoint")
    ids = reloaded_tok("Once upon a time", return_tensors="pt")["input_ids"]
    assert ids.tolist() == tok("Once upon a time", return_tensors="pt")["input_ids"].tolist()
    with torch.inference_mode():
        expected = reference(input_ids=ids).logits
        assert loaded(input_ids=ids).logits.equal(expected)
    text = reloaded_tok.decode(loaded.generate(ids, max_new_tokens=6, do_sample=False)[0])
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time") + 5


# --- the pipeline through DVC -----------------------------------------------------------------


def generations(repo: Path) -> list[dict]:
    lines = (repo / "reports/evaluate/generations.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def lm_repo(tmp_path_factory) -> Path:
    """The project with params.yaml composed for experiment=lm_tiny, after a real `dvc repro`."""
    repo = copy_project(tmp_path_factory.mktemp("lm") / "project")
    sh("transferlab", "compose", "experiment=lm_tiny", cwd=repo)
    sh("git", "commit", "-q", "-am", "experiment=lm_tiny", cwd=repo)
    result = sh("dvc", "repro", cwd=repo)
    (repo / "repro.log").write_text(result.stdout + result.stderr)
    return repo


@pytest.mark.slow
def test_repro_with_task_causal_lm_writes_a_checkpoint_perplexity_and_generations(lm_repo: Path):
    for out in (
        "models/pretrained/model.safetensors",
        "models/pretrained/tokenizer.json",
        "models/finetuned/model.safetensors",
        "models/finetuned/training_log.json",
        "plots/learning_curve.png",
        "plots/loss_train.csv",
        "plots/loss_validation.csv",
    ):
        assert (lm_repo / out).is_file(), out
    assert not (lm_repo / "plots/confusion.csv").exists()  # classification only
    config = json.loads((lm_repo / "models/finetuned/config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_layer"] == 2 and config["n_embd"] == 32
    train = json.loads((lm_repo / "metrics/train.json").read_text())
    assert train["steps"] == 6 and train["validation_perplexity"] > 1 and train["block_size"] == 32
    finetune = json.loads((lm_repo / "metrics/finetune.json").read_text())
    assert finetune["domain"] == "tech" and finetune["validation_perplexity_before"] > 1
    assert finetune["validation_perplexity_after"] > 1 and finetune["train_blocks"] == 16
    metrics = json.loads((lm_repo / "metrics/evaluate.json").read_text())
    assert metrics["test_perplexity"] > 1 and metrics["domain_test_perplexity"] > 1
    assert metrics["pretrained_test_perplexity"] > 1 and metrics["pretrained_domain_test_perplexity"] > 1
    assert metrics["test_perplexity"] != metrics["pretrained_test_perplexity"]
    assert metrics["test_blocks"] == 8
    rows = generations(lm_repo)
    prompts = yaml.safe_load((lm_repo / "params.yaml").read_text())["lm"]["generate"]["prompts"]
    assert [r["prompt"] for r in rows] == prompts and prompts[0] == "Once upon a time"
    assert all(r["generation"] for r in rows)
    report = (lm_repo / "reports/evaluate/generations.md").read_text()
    assert f"**Once upon a time**{rows[0]['generation']}" in report
    assert f">>> Once upon a time{rows[0]['generation']}" in (lm_repo / "repro.log").read_text()
    assert json.loads(sh("dvc", "status", "--json", cwd=lm_repo).stdout) == {}


@pytest.mark.slow
def test_the_lm_runs_are_tracked_with_generations_as_text_and_table(lm_repo: Path):
    db = sqlite3.connect(lm_repo / "mlflow.db")
    runs = dict(
        db.execute(
            "select t.value, r.run_uuid from runs r join tags t on t.run_uuid = r.run_uuid "
            "where r.status = 'FINISHED' and t.key = 'transferlab.stage'"
        ).fetchall()
    )
    assert sorted(runs) == ["evaluate", "finetune", "prepare", "train"]
    names = dict(db.execute("select run_uuid, name from runs").fetchall())
    for stage, run_id in runs.items():  # what each run is, and the task, in its name and its tag
        name = names[run_id]
        assert name.startswith(f"{stage} · ") and name.endswith(" · causal_lm"), name
        assert db.execute(
            "select value from tags where run_uuid = ? and key = 'task'", (run_id,)
        ).fetchone() == ("causal_lm",)

    def metric(stage: str, key: str) -> float:
        return db.execute(
            "select value from metrics where run_uuid = ? and key = ?", (runs[stage], key)
        ).fetchone()[0]

    metrics = json.loads((lm_repo / "metrics/evaluate.json").read_text())
    assert metric("evaluate", "test_perplexity") == metrics["test_perplexity"]
    assert metric("finetune", "validation_perplexity_before") > 1
    assert (
        db.execute(
            "select count(*) from metrics where run_uuid = ? and key = 'loss'", (runs["train"],)
        ).fetchone()[0]
        >= 1
    ), "per-step training loss was not logged"
    tags = dict(db.execute("select key, value from tags where run_uuid = ?", (runs["evaluate"],)))
    assert tags["task"] == "causal_lm" and tags["lineage.finetune_run_id"] == runs["finetune"]
    artifacts = lm_repo / "mlruns"
    table = next(artifacts.glob(f"**/{runs['evaluate']}/artifacts/generations.json"))
    logged = json.loads(table.read_text())
    assert logged["columns"] == ["prompt", "generation"] and logged["data"][0][0] == "Once upon a time"
    assert next(artifacts.glob(f"**/{runs['evaluate']}/artifacts/generations.md")).stat().st_size > 0
    version = db.execute("select version from model_versions where name = 'transferlab-lm-tiny'").fetchone()
    assert version is not None, "the language model was not registered"


@pytest.mark.slow
def test_the_language_model_has_a_card_that_its_registered_version_carries(lm_repo: Path):
    card = (lm_repo / "models/finetuned/README.md").read_text()
    meta, _, body = card.removeprefix("---\n").partition("\n---\n")
    meta = yaml.safe_load(meta)
    finetune = json.loads((lm_repo / "metrics/finetune.json").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "base_model" not in meta, "experiment=lm_tiny starts from random weights"
    [result] = meta["model-index"][0]["results"]
    assert result["metrics"][0] == {
        "type": "perplexity",
        "value": finetune["validation_perplexity_after"],
        "name": "validation perplexity (best epoch)",
    }
    assert "`GPT2LMHeadModel` decoder" in body and "on tech text" in body and "## Limitations" in body
    evaluate = json.loads((lm_repo / "metrics/evaluate.json").read_text())
    [(description,)] = sqlite3.connect(lm_repo / "mlflow.db").execute(
        "select description from model_versions where name = 'transferlab-lm-tiny'"
    )
    assert description.startswith(card)
    assert f"| test perplexity | {evaluate['test_perplexity']} |" in description[len(card) :]


@pytest.mark.slow
def test_the_registered_language_model_serves_text_over_rest(lm_repo: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transferlab.tasks.causal_lm.generate import generate

    rows = generations(lm_repo)
    prompts = [rows[0]["prompt"], rows[1]["prompt"]]
    same, greedy_short = serve_and_post(
        lm_repo,
        "models:/transferlab-lm-tiny@champion",
        {"inputs": prompts},
        {"inputs": prompts, "params": {"do_sample": False, "max_new_tokens": 2}},
    )
    # The served model generates with the evaluate stage's settings: the same texts.
    assert [p["text"] for p in same] == [rows[0]["generation"], rows[1]["generation"]]
    # A request's params override them: two greedy tokens are the argmax path, shorter.
    net, tok = (
        AutoModelForCausalLM.from_pretrained(lm_repo / "models/finetuned"),
        AutoTokenizer.from_pretrained(lm_repo / "models/finetuned"),
    )
    expected = generate(net, tok, prompts, greedy(max_new_tokens=2))
    assert [p["text"] for p in greedy_short] == expected


def logged_model(repo: Path):
    """The champion transferlab-lm-tiny version's logged model: (its MLmodel, its artifact folder, the
    evaluate run's artifact folder)."""
    from urllib.parse import urlparse

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo}/mlflow.db")
    version = client.get_model_version_by_alias("transferlab-lm-tiny", "champion")
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    folder = Path(urlparse(model.artifact_location).path)
    run = Path(urlparse(client.get_run(version.run_id).info.artifact_uri).path)
    return yaml.safe_load((folder / "MLmodel").read_text()), folder, run


@pytest.mark.slow
def test_the_registered_language_model_refers_to_its_weights_in_dvc_instead_of_copying_them(lm_repo: Path):
    """The weights live once, in DVC's cache: the logged model records the hash DVC gives
    models/finetuned (as in dvc.lock), not a copy. The package source every logged model carries
    (code/, about 0.3 MB whatever the model) is left out of the sum: the tiny model is smaller."""
    mlmodel, folder, run = logged_model(lm_repo)
    logged = [path for root in (folder, run) for path in root.rglob("*") if path.is_file()]
    assert not [p for p in logged if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".gguf")]
    size = sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != "code"
    )
    finetuned = sum(p.stat().st_size for p in (lm_repo / "models/finetuned").rglob("*") if p.is_file())
    assert size < 0.1 * finetuned, (size, finetuned)
    weights = mlmodel["flavors"]["python_function"]["config"]["weights"]
    lock = yaml.safe_load((lm_repo / "dvc.lock").read_text())
    [out] = [out for out in lock["stages"]["finetune"]["outs"] if out["path"] == "models/finetuned"]
    assert weights["md5"] == out["md5"] and weights["md5"].endswith(".dir")
    assert Path(weights["root"]) == lm_repo.resolve() and weights["path"] == "models/finetuned"


@pytest.mark.slow
def test_the_language_model_fetches_its_weights_from_the_dvc_remote_and_refuses_without_them(
    lm_repo: Path, tmp_path: Path
):
    """A clone whose workspace and DVC cache lack the weights: with an empty remote the model
    refuses to load, naming the hash and `dvc pull`; with the remote `dvc push` filled, it fetches
    them into the clone's cache (the workspace untouched) and generates the evaluate stage's text."""
    import shutil

    import mlflow

    clone = copy_tiny(lm_repo, tmp_path / "clone")
    sh("dvc", "remote", "add", "--local", "-d", "team", str(tmp_path / "remote"), cwd=clone)
    sh("dvc", "push", "finetune", cwd=clone)
    shutil.rmtree(clone / ".dvc" / "cache")
    shutil.rmtree(clone / "models" / "finetuned")
    sh("dvc", "remote", "add", "--local", "-d", "empty", str(tmp_path / "empty"), cwd=clone)
    weights = logged_model(lm_repo)[0]["flavors"]["python_function"]["config"]["weights"]
    here = {"weights": {**weights, "root": str(clone)}}  # as if logged in the clone
    uri, previous = "models:/transferlab-lm-tiny@champion", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{lm_repo}/mlflow.db")
    try:
        with pytest.raises(UserError, match="weights are unavailable") as refused:
            mlflow.pyfunc.load_model(uri, model_config=here)
        assert weights["md5"] in str(refused.value) and "`dvc pull`" in str(refused.value)
        sh("dvc", "remote", "default", "--local", "team", cwd=clone)
        model = mlflow.pyfunc.load_model(uri, model_config=here)
    finally:
        mlflow.set_tracking_uri(previous)
    row = generations(lm_repo)[0]
    assert model.predict([row["prompt"]])["text"].tolist() == [row["generation"]]
    assert not (clone / "models" / "finetuned").exists()
    md5 = weights["md5"]
    assert (clone / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()


@pytest.mark.slow
def test_a_forced_rerun_gives_identical_metrics_and_generations(lm_repo: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "project"
    shutil.copytree(lm_repo, copy, symlinks=True)
    files = [
        "metrics/train.json",
        "metrics/finetune.json",
        "metrics/evaluate.json",
        "reports/evaluate/generations.jsonl",
    ]
    before = {f: (copy / f).read_bytes() for f in files}
    sh("dvc", "repro", "--force", "train", "finetune", "evaluate", "--single-item", cwd=copy)
    assert {f: (copy / f).read_bytes() for f in files} == before


def test_an_empty_prompt_gets_a_heading_of_its_own_in_the_generations():
    """Before: `## ` and `****text` in reports/evaluate/generations.md."""
    from transferlab.tasks.causal_lm.evaluate import markdown

    text = markdown(make_config("experiment=lm_tiny"), [{"prompt": "", "generation": "a tale"}])
    assert "## (empty prompt)\n\na tale" in text and "****" not in text
