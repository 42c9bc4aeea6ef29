"""make_batches: each framework's data made into deterministic batches; empty or mismatched data refused in one line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from intradist.analysis.batches import BatchOptions, make_batches, read_table
from intradist.analysis.loading import LoadedModel, image_classification_loss, load_checkpoint
from intradist.errors import UserError


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def same_batches(first, second) -> bool:
    """Equal nested batches (tensors compared exactly)."""
    if torch.is_tensor(first):
        return torch.is_tensor(second) and first.shape == second.shape and torch.equal(first, second)
    if isinstance(first, dict):
        return first.keys() == second.keys() and all(same_batches(first[k], second[k]) for k in first)
    if isinstance(first, (list, tuple)):
        return len(first) == len(second) and all(same_batches(a, b) for a, b in zip(first, second))
    return first == second


def image_model(framework: str = "state_dict", **extras) -> LoadedModel:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    return LoadedModel(model, framework, Path("tiny.pt"), "0" * 64, "tiny", image_classification_loss, dict(extras))


# ---------------------------------------------------------------------------------------------
# fairseq


@pytest.fixture(scope="module")
def fairseq_model(teacher_checkpoint) -> LoadedModel:
    return load_checkpoint(teacher_checkpoint)


def test_fairseq_split_gives_every_sentence_once_in_token_limited_batches(fairseq_model):
    batches = make_batches(fairseq_model, BatchOptions(split="valid", max_tokens=200, batch_size=8))
    dataset = fairseq_model.extras["task"].dataset("valid")
    ids = torch.cat([sample["id"] for sample in batches])
    assert sorted(ids.tolist()) == list(range(len(dataset)))
    assert all(sample["nsentences"] <= 8 for sample in batches)
    assert all(sample["net_input"]["src_tokens"].numel() <= 200 for sample in batches)


def test_fairseq_truncated_batches_are_a_seeded_choice(fairseq_model):
    def ids_of(seed):
        options = BatchOptions(split="valid", max_tokens=200, batch_size=4, max_batches=2, seed=seed)
        return [sample["id"].tolist() for sample in make_batches(fairseq_model, options)]

    first = make_batches(fairseq_model, BatchOptions(split="valid", max_tokens=200, batch_size=4, max_batches=2))
    again = make_batches(fairseq_model, BatchOptions(split="valid", max_tokens=200, batch_size=4, max_batches=2))
    assert len(first) == 2 and same_batches(first, again)
    assert len({str(ids_of(seed)) for seed in range(1, 5)}) > 1


def test_fairseq_unknown_split_lists_the_splits_there(fairseq_model):
    with pytest.raises(UserError) as excinfo:
        make_batches(fairseq_model, BatchOptions(split="dev"))
    assert "no split 'dev'" in one_line_error(excinfo) and "test, train, valid" in str(excinfo.value)


def test_fairseq_data_other_than_the_models_dictionaries_is_refused(fairseq_model, tmp_path):
    with pytest.raises(UserError) as excinfo:
        make_batches(fairseq_model, BatchOptions(data=tmp_path))
    assert "dictionaries" in one_line_error(excinfo)


# ---------------------------------------------------------------------------------------------
# Text classification files


@pytest.fixture(scope="module")
def minilm(minilm_folder) -> LoadedModel:
    return load_checkpoint(minilm_folder, num_labels=2)


def test_rte_pairs_are_tokenized_with_sorted_label_ids(minilm, rte_dev):
    options = BatchOptions(data=rte_dev, text_fields=("sentence1", "sentence2"), batch_size=64, max_length=32)
    batches = make_batches(minilm, options)
    _, rows = read_table(rte_dev)
    labels = torch.cat([batch["labels"] for batch in batches])
    assert [len(batch["labels"]) for batch in batches] == [64, 64, len(rows) - 128]
    assert labels.tolist() == [["entailment", "not_entailment"].index(row["label"]) for row in rows]
    assert batches[0]["input_ids"].shape == (64, 32)
    first = minilm.extras["tokenizer"].decode(batches[0]["input_ids"][0], skip_special_tokens=True)
    assert first.startswith(rows[0]["sentence1"].lower()[:20])
    assert set(batches[0]["token_type_ids"][0].tolist()) == {0, 1}


def test_text_subset_depends_only_on_the_seed(minilm, rte_dev):
    def inputs_of(seed):
        options = BatchOptions(data=rte_dev, text_fields=("sentence1",), batch_size=10, max_batches=2, seed=seed)
        return [batch["input_ids"] for batch in make_batches(minilm, options)]

    assert same_batches(inputs_of(1), inputs_of(1))
    assert not same_batches(inputs_of(1), inputs_of(2))


def test_jsonl_integer_labels_stay_integers(minilm, tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for text, label in [("good film", 1), ("bad film", 0), ("fine", 1)]:
            handle.write(json.dumps({"text": text, "y": label}) + "\n")
    (batch,) = make_batches(minilm, BatchOptions(data=path, text_fields=("text",), label_field="y"))
    assert batch["labels"].tolist() == [1, 0, 1]


def test_missing_column_is_named_with_the_files_columns(minilm, rte_dev):
    with pytest.raises(UserError) as excinfo:
        make_batches(minilm, BatchOptions(data=rte_dev))
    message = one_line_error(excinfo)
    assert "no column 'sentence'" in message and "index, sentence1, sentence2, label" in message


def test_more_labels_than_the_model_has_are_refused(minilm, tmp_path):
    path = tmp_path / "three.tsv"
    path.write_text("sentence\tlabel\na\tx\nb\ty\nc\tz\n")
    with pytest.raises(UserError) as excinfo:
        make_batches(minilm, BatchOptions(data=path))
    assert "3 distinct labels" in one_line_error(excinfo)


def test_file_without_rows_has_no_examples(minilm, tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("sentence\tlabel\n")
    with pytest.raises(UserError) as excinfo:
        make_batches(minilm, BatchOptions(data=path))
    assert one_line_error(excinfo).startswith(f"{path}: no examples")


# ---------------------------------------------------------------------------------------------
# Image folders and hooks


def test_image_folder_batches_are_normalized_images_with_class_labels(digits_folder):
    batches = make_batches(image_model(), BatchOptions(data=digits_folder, image_size=8, batch_size=4))
    assert [len(labels) for _, labels in batches] == [4, 4, 4, 3]
    assert torch.cat([labels for _, labels in batches]).tolist() == [0] * 5 + [1] * 5 + [2] * 5
    images = torch.cat([images for images, _ in batches])
    assert images.shape == (15, 3, 8, 8) and images.min() < 0 < images.max()


def test_truncated_image_batches_are_a_seeded_random_choice(digits_folder):
    def labels_of(seed):
        options = BatchOptions(data=digits_folder, image_size=8, batch_size=3, max_batches=2, seed=seed)
        return [labels.tolist() for _, labels in make_batches(image_model(), options)]

    assert labels_of(1) == labels_of(1) and len(labels_of(1)) == 2
    assert labels_of(1) != labels_of(2)


def test_empty_image_folder_has_no_examples(tmp_path):
    (tmp_path / "cats").mkdir()
    with pytest.raises(UserError) as excinfo:
        make_batches(image_model(), BatchOptions(data=tmp_path))
    assert one_line_error(excinfo).startswith(f"{tmp_path}: no examples")


def test_more_class_folders_than_model_classes_are_refused(digits_folder):
    with pytest.raises(UserError) as excinfo:
        make_batches(image_model("torchvision", num_classes=2), BatchOptions(data=digits_folder, image_size=8))
    assert "3 class folders" in one_line_error(excinfo)


HOOK = """
import torch

def batches(loaded, options):
    generator = torch.Generator().manual_seed(options.seed)
    for _ in range(5):
        yield torch.randn(2, 3, 8, 8, generator=generator), torch.tensor([0, 2])

def nothing(loaded, options):
    return []
"""


def test_hook_from_a_file_supplies_the_batches(tmp_path):
    (tmp_path / "my_batches.py").write_text(HOOK)
    options = BatchOptions(hook=f"{tmp_path / 'my_batches.py'}:batches", max_batches=3)
    batches = make_batches(image_model(), options)
    assert len(batches) == 3 and same_batches(batches, make_batches(image_model(), options))
    assert image_model().loss_fn(image_model().model, batches[0]).dim() == 0
    with pytest.raises(UserError) as excinfo:
        make_batches(image_model(), BatchOptions(hook=f"{tmp_path / 'my_batches.py'}:nothing"))
    assert "no examples" in one_line_error(excinfo)


def test_non_positive_batch_size_is_refused(digits_folder):
    with pytest.raises(UserError) as excinfo:
        make_batches(image_model(), BatchOptions(data=digits_folder, batch_size=0))
    assert "--batch-size 0" in one_line_error(excinfo)
