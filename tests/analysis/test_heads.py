"""Every transformers head on its natural data, on tiny models built from configs: the Taylor values are
|θ·∂L/∂θ| of the head's own loss computed here independently; sharded folders give what single files give;
``--head`` and data that do not fit are refused in one line."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.cli import main
from intradist.analysis.loading import load_checkpoint
from intradist.analysis.ner_data import PANX_LABELS
from intradist.analysis.sensitivity import taylor_sensitivity
from intradist.errors import UserError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("ada lovelace visited buenos aires river stone cloud maple quiet harbor lantern meadow copper violet "
         "signal orchard golden gate bridge where did who the a of in is was on").split()  # fmt: skip
VOCAB = SPECIALS + WORDS + ["##s", "##ing"]
BERT = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=128)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    """A WordPiece tokenizer over :data:`VOCAB` (built here: nothing is downloaded)."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: index for index, token in enumerate(VOCAB)})


def build(head: str) -> torch.nn.Module:
    """A tiny model of ``head`` from a config, seeded, in eval mode."""
    import transformers as t

    torch.manual_seed(0)
    models = {
        "sequence-classification": lambda: t.BertForSequenceClassification(t.BertConfig(**BERT, num_labels=3)),
        "token-classification": lambda: t.BertForTokenClassification(t.BertConfig(
            **BERT, id2label=dict(enumerate(PANX_LABELS)), label2id={n: i for i, n in enumerate(PANX_LABELS)})),
        "question-answering": lambda: t.BertForQuestionAnswering(t.BertConfig(**BERT)),
        "masked-lm": lambda: t.BertForMaskedLM(t.BertConfig(**BERT)),
        "causal-lm": lambda: t.GPT2LMHeadModel(t.GPT2Config(vocab_size=len(VOCAB), n_positions=128, n_embd=32,
                                                            n_layer=2, n_head=2)),
        "seq2seq-lm": lambda: t.T5ForConditionalGeneration(t.T5Config(
            vocab_size=len(VOCAB), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0,
            eos_token_id=3, decoder_start_token_id=0)),
    }  # fmt: skip
    return models[head]().eval()


def save(model: torch.nn.Module, tokenizer, folder: Path, **options) -> Path:
    model.save_pretrained(folder, **options)
    tokenizer.save_pretrained(folder)
    return folder


def phrases(count: int, seed: int, low: int = 3, high: int = 7) -> List[List[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(low, high))] for _ in range(count)]


def write_jsonl(path: Path, rows: List[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def squad(path: Path, count: int) -> Path:
    """SQuAD v1.1 JSON: each context holds its answer at answer_start."""
    rng = random.Random(3)
    paragraphs = []
    for number, words in enumerate(phrases(count, 4, 6, 12)):
        answer = " ".join(words[2:4])
        context = " ".join(words)
        paragraphs.append({"context": context, "qas": [{"id": f"q{number}", "question": f"where did {rng.choice(WORDS)}",
                                                        "answers": [{"text": answer, "answer_start": context.index(answer)}]}]})  # fmt: skip
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


@dataclass(frozen=True)
class Case:
    head: str
    data: str  # what kind of file


CASES = [Case("sequence-classification", "jsonl"), Case("token-classification", "panx"),
         Case("token-classification", "jsonl"), Case("question-answering", "squad"), Case("masked-lm", "txt"),
         Case("causal-lm", "jsonl"), Case("causal-lm", "txt"), Case("seq2seq-lm", "jsonl")]  # fmt: skip


def write_data(case: Case, folder: Path) -> Path:
    """Six examples of the head's natural data."""
    words = phrases(6, 1)
    if case.head == "sequence-classification":
        return write_jsonl(folder / "cls.jsonl", [{"sentence": " ".join(w), "label": i % 3} for i, w in enumerate(words)])
    if case.head == "token-classification":
        tags = [[PANX_LABELS[(i + j) % len(PANX_LABELS)] for j in range(len(w))] for i, w in enumerate(words)]
        if case.data == "jsonl":  # tag ids, as Hugging Face datasets store them
            rows = [{"tokens": w, "ner_tags": [PANX_LABELS.index(t) for t in ts]} for w, ts in zip(words, tags)]
            return write_jsonl(folder / "ner.jsonl", rows)
        text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(ws, ts)) for ws, ts in zip(words, tags))
        (folder / "test.tsv").write_text(text + "\n")
        return folder / "test.tsv"
    if case.head == "question-answering":
        return squad(folder / "dev.json", 6)
    if case.head == "seq2seq-lm":
        return write_jsonl(folder / "pairs.jsonl", [{"source": " ".join(w), "target": " ".join(reversed(w))}
                                                    for w in words])  # fmt: skip
    if case.data == "txt":
        (folder / "text.txt").write_text("\n\n".join(" ".join(w) for w in words) + "\n")
        return folder / "text.txt"
    return write_jsonl(folder / "text.jsonl", [{"text": " ".join(w)} for w in words])


def natural_loss(head: str, model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's loss from its logits, written out here (not the model's ``.loss``)."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
    if head == "question-answering":
        out = model(**inputs)
        return (F.cross_entropy(out.start_logits, batch["start_positions"])
                + F.cross_entropy(out.end_logits, batch["end_positions"])) / 2  # fmt: skip
    labels = batch["labels"]
    if head == "seq2seq-lm":  # the decoder reads the targets shifted right after the start token
        start = torch.full_like(labels[:, :1], model.config.decoder_start_token_id)
        decoder = torch.cat([start, labels[:, :-1]], dim=1).masked_fill(torch.cat([start, labels[:, :-1]], 1) < 0, 0)
        inputs["decoder_input_ids"] = decoder
    logits = model(**inputs).logits
    if head == "sequence-classification":
        return F.cross_entropy(logits, labels)
    if head == "causal-lm":
        logits, labels = logits[:, :-1], labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def independent_taylor(head: str, model: torch.nn.Module, batches) -> Dict[str, float]:
    """Σ over each tensor of |θ · (1/B) Σ_b ∂L_b/∂θ|, in float64."""
    named = dict(model.named_parameters())
    total = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in named.items()}
    for batch in batches:
        grads = torch.autograd.grad(natural_loss(head, model, batch), list(named.values()), allow_unused=True)
        for name, grad in zip(named, grads):
            if grad is not None:
                total[name] += grad.double()
    return {name: (named[name].detach().double() * total[name] / len(batches)).abs().sum().item() for name in named}


def check_targets(case: Case, batches, tokenizer, data: Path) -> None:
    """The batches hold the head's targets where they belong (checked against the data file)."""
    decode = lambda ids: tokenizer.decode([i for i in ids if i >= 0], skip_special_tokens=True)  # noqa: E731
    if case.head == "sequence-classification":
        assert torch.cat([b["labels"] for b in batches]).tolist() == [0, 1, 2, 0, 1, 2]
    elif case.head == "token-classification":
        words = phrases(6, 1)
        rows = [row for b in batches for row in b["labels"].tolist()]
        for number, (row, ws) in enumerate(zip(rows, words)):
            assert [PANX_LABELS[t] for t in row if t >= 0] == [PANX_LABELS[(number + j) % 7] for j in range(len(ws))]
    elif case.head == "question-answering":
        answers = [qa["answers"][0]["text"] for p in json.loads(data.read_text())["data"][0]["paragraphs"]
                   for qa in p["qas"]]  # fmt: skip
        found = [decode(ids[s : e + 1]) for b in batches
                 for ids, s, e in zip(b["input_ids"].tolist(), b["start_positions"], b["end_positions"])]  # fmt: skip
        assert found == answers
    elif case.head == "masked-lm":
        texts = [" ".join(w) for w in phrases(6, 1)]
        originals = tokenizer(texts)["input_ids"]
        rows = [(ids, labels) for b in batches for ids, labels in zip(b["input_ids"].tolist(), b["labels"].tolist())]
        assert sum(label >= 0 for _, labels in rows for label in labels) >= len(rows)
        masked = 0
        for (ids, labels), original in zip(rows, originals):
            assert any(label >= 0 for label in labels)
            for position, label in enumerate(labels):
                if label >= 0:
                    assert label == original[position] and original[position] not in tokenizer.all_special_ids
                    masked += ids[position] == tokenizer.mask_token_id
                else:
                    assert position >= len(original) or ids[position] == original[position]
        assert masked > 0
    elif case.head == "causal-lm":
        for b in batches:
            assert torch.equal(b["labels"], b["input_ids"].masked_fill(b["attention_mask"] == 0, -100))
    else:
        targets = [" ".join(reversed(w)) for w in phrases(6, 1)]
        assert [decode(row) for b in batches for row in b["labels"].tolist()] == targets


@pytest.mark.parametrize("case", CASES, ids=[f"{c.head}-{c.data}" for c in CASES])
def test_taylor_values_are_theta_times_the_gradient_of_the_heads_natural_loss(case, tokenizer, tmp_path):
    model = build(case.head)
    folder = save(model, tokenizer, tmp_path / "model")
    loaded = load_checkpoint(folder)
    assert loaded.extras["head"] == case.head and f"({case.head} head" in loaded.description
    assert "newly initialised" not in loaded.description
    data = write_data(case, tmp_path)
    batches = make_batches(loaded, BatchOptions(data=data, batch_size=3, max_length=48))
    assert len(batches) == 2
    check_targets(case, batches, tokenizer, data)
    result = taylor_sensitivity(loaded.model, batches, loaded.loss_fn, progress=False)
    expected = independent_taylor(case.head, model, batches)
    assert list(result.values) == list(expected)
    for name, value in expected.items():
        assert result.values[name].double().sum().item() == pytest.approx(value, rel=1e-5, abs=1e-12), name
    assert sum(expected.values()) > 0


@pytest.mark.parametrize("head", ["token-classification", "causal-lm", "seq2seq-lm"])
def test_a_sharded_folder_gives_what_the_single_file_gives(head, tokenizer, tmp_path):
    model = build(head)
    single = save(model, tokenizer, tmp_path / "single")
    sharded = save(model, tokenizer, tmp_path / "sharded", max_shard_size="20KB")
    assert not (sharded / "model.safetensors").exists() and (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    data = write_data(Case(head, "panx" if head == "token-classification" else "jsonl"), tmp_path)
    results = []
    for folder in (single, sharded):
        loaded = load_checkpoint(folder)
        batches = make_batches(loaded, BatchOptions(data=data, batch_size=3))
        results.append((loaded, taylor_sensitivity(loaded.model, batches, loaded.loss_fn, progress=False)))
    (one, first), (many, second) = results
    assert "shards" in many.description and one.sha256 != many.sha256
    assert list(first.values) == list(second.values)
    assert all(torch.equal(first.values[name], second.values[name]) for name in first.values)
    assert first.batch_losses == second.batch_losses


def test_a_missing_shard_is_named_in_one_line(tokenizer, tmp_path):
    folder = save(build("causal-lm"), tokenizer, tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(UserError, match=f"lists {shard.name}, which is not a file"):
        load_checkpoint(folder)


def test_a_bare_encoder_gets_the_head_named_by_head(tokenizer, tmp_path):
    from transformers import BertModel, BertConfig

    torch.manual_seed(0)
    folder = save(BertModel(BertConfig(**BERT)), tokenizer, tmp_path / "encoder")
    loaded = load_checkpoint(folder, head="question-answering", seed=2)
    assert type(loaded.model).__name__ == "BertForQuestionAnswering"
    assert "question-answering head newly initialised (seed 2: qa_outputs.bias, qa_outputs.weight)" in loaded.description
    tagger = load_checkpoint(folder, head="token-classification", num_labels=7)
    assert tagger.model.config.num_labels == 7
    batches = make_batches(tagger, BatchOptions(data=write_data(Case("token-classification", "panx"), tmp_path)))
    assert {PANX_LABELS[i] for b in batches for i in b["labels"].flatten().tolist() if i >= 0} <= set(PANX_LABELS)
    with pytest.raises(UserError, match="no token-classification head; pass --num-labels"):
        load_checkpoint(folder, head="token-classification")
    with pytest.raises(UserError, match="--num-labels 3: a causal-lm head has no labels"):
        load_checkpoint(folder, head="causal-lm", num_labels=3)


def test_a_train_xtreme_folder_brings_its_encoding(tokenizer, tmp_path):
    """A folder as ``intradist train xtreme`` writes it: config.xtreme_task and metrics.json's settings."""
    model = build("token-classification")
    model.config.xtreme_task = "panx"
    folder = save(model, tokenizer, tmp_path / "panx")
    settings = {"max_length": 6, "long_sentences": "split", "extra_sep": True, "doc_stride": 128}
    (folder / "metrics.json").write_text(json.dumps({"task": "panx", "settings": settings}))
    loaded = load_checkpoint(folder)
    assert "intradist train xtreme run (panx)" in loaded.description
    data = write_data(Case("token-classification", "panx"), tmp_path)
    batches = make_batches(loaded, BatchOptions(data=data, batch_size=100))
    ids = batches[0]["input_ids"]
    assert ids.shape[1] <= 6 and len(ids) > 6  # long sentences split into chunks of 6 - 3 special tokens
    for row, mask in zip(ids.tolist(), batches[0]["attention_mask"].tolist()):
        end = sum(mask)
        assert row[end - 2 : end] == [tokenizer.sep_token_id] * 2  # XTREME's extra separator
    longer = make_batches(loaded, BatchOptions(data=data, batch_size=100, max_length=40))
    assert len(longer[0]["input_ids"]) == 6  # --max-length given: no sentence needs splitting


@pytest.mark.parametrize("task, dev, flags", [("panx", "panx/en/dev.tsv", ["--max-length", "32", "--extra-sep"]),
                                               ("tydiqa", "tydiqa/en/dev.json", ["--max-length", "128", "--doc-stride", "32"])])
def test_a_train_xtreme_run_is_analysed_on_the_inputs_it_was_evaluated_on(task, dev, flags, tmp_path):
    """A real run (MiniLM, two updates): the analysis loss on its English dev file is the dev loss it logged."""
    from intradist.trainers import xtreme

    data = Path(__file__).resolve().parent.parent / "fixtures" / "xtreme"
    out = tmp_path / task
    result = CliRunner().invoke(xtreme.main, [str(a) for a in ["--task", task, "--data-dir", data, "--max-steps", "2",
                                "--batch-size", "4", "--eval-steps", "2", "--warmup", "0", *flags, "--out", out]])  # fmt: skip
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    dev_loss = [entry["eval_dev_loss"] for entry in logged if "eval_dev_loss" in entry][-1]
    loaded = load_checkpoint(out)
    assert f"intradist train xtreme run ({task})" in loaded.description
    (batch,) = make_batches(loaded, BatchOptions(data=data / dev, batch_size=32))  # the trainer's evaluation batch
    with torch.no_grad():
        assert loaded.loss_fn(loaded.model, batch).item() == pytest.approx(dev_loss, rel=1e-5)


def _one_line(result, *fragments) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("analyze-sensitivity: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_head_flag_and_data_that_do_not_fit_are_one_line_with_exit_2(tokenizer, tmp_path):
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args])  # noqa: E731
    tagger = save(build("token-classification"), tokenizer, tmp_path / "tagger")
    reader = save(build("question-answering"), tokenizer, tmp_path / "reader")
    panx = write_data(Case("token-classification", "panx"), tmp_path)
    text = write_data(Case("causal-lm", "jsonl"), tmp_path)
    out = tmp_path / "report"
    _one_line(run(tagger, "--head", "tagging", "--data", panx, "--out", out), "--head tagging: unknown",
              "token-classification")  # fmt: skip
    _one_line(run(tagger, "--head", "causal-lm", "--data", text, "--out", out),
              "BertForTokenClassification has a token-classification head, not causal-lm")  # fmt: skip
    _one_line(run(reader, "--head", "question-answering", "--data", panx, "--out", out),
              "the question-answering head reads SQuAD")  # fmt: skip
    glue = tmp_path / "dev.tsv"
    glue.write_text("sentence1\tsentence2\tlabel\nada visited\tthe river\t1\n")
    _one_line(run(tagger, "--head", "token-classification", "--data", glue, "--out", out), "dev.tsv: line 1")
    _one_line(run(tagger, "--data", write_data(Case("sequence-classification", "jsonl"), tmp_path), "--out", out),
              "no column 'tokens'")  # fmt: skip
    causal = save(build("causal-lm"), tokenizer, tmp_path / "gpt")
    _one_line(run(causal, "--data", text, "--label-field", "label", "--out", out), "--label-field", "causal-lm")
    _one_line(run(tmp_path / "text.jsonl", "--head", "causal-lm", "--out", out), "--head causal-lm", "is a file")
    assert not out.exists()


def test_the_command_analyses_a_pan_x_tagger(tokenizer, tmp_path):
    model = build("token-classification")
    folder = save(model, tokenizer, tmp_path / "tagger")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [str(folder), "--data", str(write_data(Case("token-classification", "panx"), tmp_path)),
                                       "--batch-size", "3", "--no-plots", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / "balance.json").read_text())
    assert "token-classification head" in record["checkpoints"][0]["description"]
    statistics = record["checkpoints"][0]["balance"]
    assert all(s["num_params"] == sum(p.numel() for p in model.parameters()) for s in statistics.values())
