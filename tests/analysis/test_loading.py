"""load_checkpoint: each framework detected and rebuilt with a correct loss; unsafe or broken inputs refused in one line."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.loading import LoadedModel, load_checkpoint
from intradist.errors import UserError


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


class RunsCommandWhenUnpickled:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TrainingMetadata:
    """A harmless class nobody allow-listed: its file loads only with trust."""

    def __init__(self, epoch: int):
        self.epoch = epoch


# ---------------------------------------------------------------------------------------------
# fairseq


@pytest.fixture(scope="module")
def fairseq_model(teacher_checkpoint) -> LoadedModel:
    return load_checkpoint(teacher_checkpoint)


def test_fairseq_checkpoint_is_detected_and_rebuilt_in_eval_mode(fairseq_model, teacher_checkpoint, tiny_data_bin):
    assert fairseq_model.framework == "fairseq"
    assert fairseq_model.description.startswith("fairseq checkpoint: transformer, task translation, 1+1 layers")
    assert not fairseq_model.model.training
    assert fairseq_model.sha256 == hashlib.sha256(teacher_checkpoint.read_bytes()).hexdigest()
    assert fairseq_model.extras["data"] == tiny_data_bin
    state = torch.load(teacher_checkpoint, weights_only=True)
    for name, tensor in fairseq_model.model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name


def test_fairseq_loss_is_the_mean_token_nll_of_fairseqs_own_criterion(fairseq_model):
    batches = make_batches(fairseq_model, BatchOptions(max_batches=3, max_tokens=300))
    criterion = LabelSmoothedCrossEntropyCriterion(fairseq_model.extras["task"], sentence_avg=False, label_smoothing=0.0)
    assert len(batches) == 3
    with torch.no_grad():
        for sample in batches:
            loss = fairseq_model.loss_fn(fairseq_model.model, sample)
            _, _, logging = criterion(fairseq_model.model, sample)
            assert loss.dim() == 0 and math.isfinite(loss.item())
            assert loss.item() == pytest.approx(logging["nll_loss"].item() / sample["ntokens"], rel=1e-5)


def test_fairseq_checkpoint_whose_data_directory_is_gone_asks_for_data(teacher_checkpoint, tiny_data_bin, tmp_path):
    state = torch.load(teacher_checkpoint, weights_only=True)
    state["cfg"]["task"]["data"] = str(tmp_path / "moved-away")
    moved = tmp_path / "moved.pt"
    torch.save(state, moved)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(moved)
    assert "pass --data DIR" in one_line_error(excinfo) and str(moved) in str(excinfo.value)
    loaded = load_checkpoint(moved, "fairseq", data=tiny_data_bin)
    assert loaded.extras["data"] == tiny_data_bin


# ---------------------------------------------------------------------------------------------
# transformers


def test_minilm_gets_a_seeded_new_classification_head_and_a_finite_loss(minilm_folder, rte_dev):
    first = load_checkpoint(minilm_folder, num_labels=2, seed=3)
    again = load_checkpoint(minilm_folder, "transformers", num_labels=2, seed=3)
    other = load_checkpoint(minilm_folder, num_labels=2, seed=4)
    assert first.framework == "transformers"
    assert "BertModel" in first.description and "classification head newly initialised" in first.description
    assert torch.equal(first.model.classifier.weight, again.model.classifier.weight)
    assert not torch.equal(first.model.classifier.weight, other.model.classifier.weight)
    assert first.sha256 == hashlib.sha256((minilm_folder / "model.safetensors").read_bytes()).hexdigest()
    options = BatchOptions(data=rte_dev, text_fields=("sentence1", "sentence2"), batch_size=4, max_batches=1)
    (batch,) = make_batches(first, options)
    with torch.no_grad():
        loss = first.loss_fn(first.model, batch)
    assert loss.dim() == 0 and math.isfinite(loss.item())


def test_model_folder_without_classification_head_needs_num_labels(minilm_folder):
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(minilm_folder)
    assert "--num-labels" in one_line_error(excinfo)


@pytest.fixture()
def tiny_bert_bin_folder(tmp_path):
    """A model folder with a trained-looking head saved the legacy way: config.json + pytorch_model.bin, no tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, architectures=["BertForSequenceClassification"])  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    return tmp_path, model


def test_legacy_bin_folder_with_its_own_head_loads_weights_only(tiny_bert_bin_folder, rte_dev):
    folder, reference = tiny_bert_bin_folder
    loaded = load_checkpoint(folder)
    assert "BertForSequenceClassification" in loaded.description and "newly initialised" not in loaded.description
    assert loaded.model.config.num_labels == 3
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(folder, num_labels=2)
    assert "has 3 labels" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:  # no vocabulary: no silent all-[UNK] tokenizer
        make_batches(loaded, BatchOptions(data=rte_dev, text_fields=("sentence1", "sentence2")))
    assert "no tokenizer" in one_line_error(excinfo)


def test_legacy_bin_weights_are_unpickled_once(tiny_bert_bin_folder, monkeypatch):
    """The refusal check reads the .bin weights-only and hands them to transformers, which read it a
    second time before (a third for train glue's teacher); the trainers' folder check does the same."""
    from transformers import AutoConfig

    from intradist.analysis.loaders.transformers_folder import from_pretrained
    from intradist.trainers.hf import check_model_folder

    folder, reference = tiny_bert_bin_folder
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *args, **kwargs: reads.append(Path(path).name) or load(path, *args, **kwargs))
    analysed = load_checkpoint(folder).model
    assert reads == ["pytorch_model.bin"]
    weights = check_model_folder(folder, "--teacher")
    trained, _ = from_pretrained("AutoModelForSequenceClassification", folder, weights, AutoConfig.from_pretrained(folder))
    assert reads == ["pytorch_model.bin"] * 2
    for name, tensor in reference.state_dict().items():
        assert torch.equal(analysed.state_dict()[name], tensor) and torch.equal(trained.state_dict()[name], tensor), name
    assert not analysed.training and not trained.training


def test_bin_weights_that_would_run_code_are_refused(tiny_bert_bin_folder):
    folder, reference = tiny_bert_bin_folder
    marker = folder / "pwned"
    torch.save({**reference.state_dict(), "payload": RunsCommandWhenUnpickled(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(folder)
    assert re.search(r"needs arbitrary unpickling \((posix|nt)\.system\)", one_line_error(excinfo))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# torchvision and plain state dicts


@pytest.fixture(scope="module")
def resnet_state() -> dict:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=3).state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_state_dict_loads_with_arch_and_num_classes(resnet_state, digits_folder, tmp_path, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pt":
        torch.save(resnet_state, path)
    else:
        safetensors.torch.save_file(resnet_state, str(path))
    loaded = load_checkpoint(path, arch="resnet18", num_classes=3)
    assert loaded.framework == "torchvision" and "resnet18, 3 classes" in loaded.description
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, resnet_state[name]), name
    batches = make_batches(loaded, BatchOptions(data=digits_folder, image_size=32, batch_size=8))
    with torch.no_grad():
        loss = loaded.loss_fn(loaded.model, batches[0])
    assert loss.dim() == 0 and math.isfinite(loss.item())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_and_batches_go_to_the_requested_device(resnet_state, digits_folder, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(resnet_state, path)
    loaded = load_checkpoint(path, arch="resnet18", num_classes=3, device="cuda")
    images, labels = make_batches(loaded, BatchOptions(data=digits_folder, image_size=32, device="cuda"))[0]
    assert next(loaded.model.parameters()).is_cuda and images.is_cuda and labels.is_cuda
    with torch.no_grad():
        assert math.isfinite(loaded.loss_fn(loaded.model, (images, labels)).item())


def test_wrapped_data_parallel_state_dict_is_unwrapped(resnet_state, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet_state.items()}, "epoch": 7}, path)
    loaded = load_checkpoint(path, "torchvision", arch="resnet18", num_classes=3)
    assert torch.equal(loaded.model.fc.weight, resnet_state["fc.weight"])


def test_state_dict_for_other_number_of_classes_is_a_shape_mismatch(resnet_state, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(resnet_state, path)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path, arch="resnet18", num_classes=5)
    message = one_line_error(excinfo)
    assert str(path) in message and "resnet18" in message
    assert "shape mismatch" in message and "fc.weight (3, 512) in the file, (5, 512) in the model" in message


def test_state_dict_alone_asks_for_arch_or_model_factory(resnet_state, tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(resnet_state, str(path))
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path)
    assert "--arch" in one_line_error(excinfo) and "--model-factory" in str(excinfo.value)


FACTORY = """
import torch

def build():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
"""


def test_model_factory_from_a_file_or_sys_path_gets_a_state_dict(digits_folder, tmp_path, monkeypatch):
    (tmp_path / "tiny_factory_for_loading.py").write_text(FACTORY)
    (tmp_path / "tiny_factory_with_loss.py").write_text(
        FACTORY + "\ndef loss_fn(model, batch):\n    return model(batch[0]).square().mean()\n"
    )
    torch.manual_seed(5)
    reference = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    path = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), path)

    by_file = load_checkpoint(path, model_factory=f"{tmp_path / 'tiny_factory_for_loading.py'}:build")
    assert by_file.framework == "state_dict" and "cross-entropy" in by_file.description
    assert torch.equal(by_file.model[1].weight, reference[1].weight)
    batches = make_batches(by_file, BatchOptions(data=digits_folder, image_size=8, batch_size=5))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(reference(batches[0][0]), batches[0][1])
        assert by_file.loss_fn(by_file.model, batches[0]).item() == pytest.approx(expected.item())

    monkeypatch.syspath_prepend(str(tmp_path))
    by_name = load_checkpoint(path, "state_dict", model_factory="tiny_factory_with_loss:build")
    with torch.no_grad():
        expected = reference(batches[0][0]).square().mean()
        assert by_name.loss_fn(by_name.model, batches[0]).item() == pytest.approx(expected.item())


# ---------------------------------------------------------------------------------------------
# Refusals


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": {}, "payload": RunsCommandWhenUnpickled(marker)}, path)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path)
    message = one_line_error(excinfo)
    assert re.match(rf"{re.escape(str(path))}: needs arbitrary unpickling \((posix|nt)\.system\)", message)
    assert "--trust-checkpoint" in message
    assert not marker.exists()


def test_trusted_checkpoint_with_unlisted_types_loads_only_with_trust(resnet_state, tmp_path):
    path = tmp_path / "with-metadata.pt"
    torch.save({"state_dict": resnet_state, "meta": TrainingMetadata(3)}, path)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path, arch="resnet18", num_classes=3)
    assert "TrainingMetadata" in one_line_error(excinfo)
    loaded = load_checkpoint(path, arch="resnet18", num_classes=3, trust_checkpoint=True)
    assert "arbitrary unpickling (trusted checkpoint)" in loaded.description


def test_truncated_checkpoints_are_refused(teacher_checkpoint, resnet_state, tmp_path):
    data = teacher_checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(truncated)
    assert "truncated or corrupt" in one_line_error(excinfo)
    whole = tmp_path / "whole.safetensors"
    safetensors.torch.save_file(resnet_state, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(cut, arch="resnet18", num_classes=3)
    assert "truncated or corrupt" in one_line_error(excinfo)


def test_directory_that_is_no_model_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(tmp_path)
    assert "without config.json" in one_line_error(excinfo)


def test_model_folder_without_weights_is_refused(minilm_folder, tmp_path):
    shutil.copy(minilm_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(tmp_path, num_labels=2)
    assert "no weights file" in one_line_error(excinfo)


def test_unknown_framework_missing_path_and_bad_device_are_refused(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(tmp_path, framework="keras")
    assert "'keras'" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(tmp_path / "missing.pt")
    assert "no such file" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(tmp_path / "missing.pt", device="gpu")
    assert "--device gpu" in one_line_error(excinfo)


def test_explicit_framework_that_does_not_match_the_file_is_refused(resnet_state, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(resnet_state, path)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path, "fairseq")
    assert "not a fairseq checkpoint" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        load_checkpoint(path, "transformers")
    assert "folder with config.json" in one_line_error(excinfo)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_not_a_checkpoint_rather_than_a_pickle_to_trust(tmp_path, seed):
    """Weights-only loading fails on random bytes too; they must not be sent to --trust-checkpoint."""
    path = tmp_path / "random.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(seed)).tolist()))
    for trust in (False, True):
        with pytest.raises(UserError) as excinfo:
            load_checkpoint(path, trust_checkpoint=trust)
        message = one_line_error(excinfo)
        assert message.startswith(f"{path}: ") and "--trust-checkpoint" not in message
        assert "not a PyTorch checkpoint" in message or "truncated or corrupt" in message
