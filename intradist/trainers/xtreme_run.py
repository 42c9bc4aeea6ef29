"""A run of ``intradist train xtreme``: the student and teacher models, training, scores per language.

Fine-tune on ``--train-language``, keep the weights the task's recipe selects, score every language's
evaluation split and write ``zero_shot.json``, ``zero_shot.md``, ``metrics.json`` and the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from transformers import TrainingArguments, set_seed

from intradist.analysis.loaders.transformers_folder import from_pretrained, quiet_transformers
from intradist.errors import UserError
from intradist.results import markdown_table
from intradist.trainers import ner_data
from intradist.trainers.distributed import shared_run
from intradist.trainers.hf import (
    TOKEN_CLASSIFICATION,
    DistillationTrainer,
    SelectionCallback,
    balance_callbacks,
    check_model_folder,
    checkpointing,
    default_model,
    finite,
    first_line,
    join_processes,
    method_name,
    output_folder,
    resolve_device,
    resume_point,
    run_record,
    save_run,
    train_and_select,
)
from intradist.trainers.xtreme_tasks import (
    TASKS,
    XtremeConfig,
    XtremeTask,
    collator,
    evaluation_languages,
    evaluation_set,
    split_path,
    train_set,
)

COMMAND = "intradist train xtreme"


def _is_local(model: str) -> bool:
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~"))


def load_student(model: str, task: XtremeTask):
    """Tokenizer and ``task``'s model from a local folder or a hub name; the head is new unless it matches."""
    import transformers

    local = _is_local(model)
    weights = check_model_folder(Path(model).expanduser(), "--model", tokenizer=True) if local else None
    source = str(Path(model).expanduser()) if local else model
    head = {}
    if task.head is TOKEN_CLASSIFICATION:
        labels = ner_data.PANX_LABELS
        head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}  # fmt: skip
    try:
        with quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)
            config = transformers.AutoConfig.from_pretrained(source, local_files_only=local, **head)
            config.xtreme_task = task.name  # saved in config.json: a teacher is checked against it
        network, info = from_pretrained(task.auto_class, source, weights, config, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--model {model}: cannot be loaded for {task.name} ({first_line(error)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"--model {model}: has no fast tokenizer (tokenizer.json), which {task.name} needs")
    new = sorted(set(info.get("missing_keys", [])) | {key for key, *_ in info.get("mismatched_keys", [])})
    return tokenizer, network, new


def load_teacher(folder: Path, task: XtremeTask, student_config: Any) -> Tuple[torch.nn.Module, Any]:
    """The teacher of KD or self-distillation: a folder ``intradist train xtreme`` saved for the same task."""
    import transformers

    weights = check_model_folder(folder, "--teacher")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--teacher {folder}: config.json is no transformers config ({first_line(error)})") from None
    trained_for = getattr(config, "xtreme_task", None)
    if trained_for != task.name:
        raise UserError(f"--teacher {folder}: trained for {trained_for or 'another task'}, not {task.name}; "
                        f"give a folder intradist train xtreme saved for --task {task.name}")  # fmt: skip
    if getattr(config, "vocab_size", None) != getattr(student_config, "vocab_size", None):
        raise UserError(f"--teacher {folder}: its vocabulary differs from the student's; it cannot read its inputs")
    try:
        teacher = from_pretrained(task.auto_class, folder, weights, config)[0]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--teacher {folder}: cannot be loaded ({first_line(error)})") from None
    return teacher, config



def zero_shot_table(task: XtremeTask, scores: Dict[str, Dict[str, Any]], average: Dict[str, float]) -> str:
    """Markdown: one row per language and the average, the task's metrics in percent."""
    metrics = [name for name in next(iter(scores.values())) if name != "examples"]
    rows = [[lang, *(f"{values[m]:.2f}" for m in metrics), values["examples"]] for lang, values in scores.items()]
    rows.append(["**average**", *(f"{average[m]:.2f}" for m in metrics), ""])
    return markdown_table(["language", *metrics, "examples"], rows) + "\n"


def train(config: XtremeConfig, command: str = COMMAND, extra_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Fine-tune on ``--train-language``, score every language; returns the record of ``metrics.json``.

    Every input is checked before anything is written: a user error leaves no folder behind.
    """
    if config.task not in TASKS:
        raise UserError(f"--task {config.task}: unknown; choose {' or '.join(TASKS)}")
    task = TASKS[config.task]
    config = config.resolved()
    settings = config.distillation
    use_cpu, fp16 = resolve_device(config.device, config.fp16)
    data_dir = Path(config.data_dir)
    local_model = Path(config.model).expanduser() if config.model and _is_local(config.model) else None
    folder = output_folder(COMMAND, config, [data_dir, local_model, settings.teacher])
    languages = evaluation_languages(data_dir, task, config.languages)
    train_file = split_path(data_dir, task, config.train_language, "train")
    dev_file = split_path(data_dir, task, config.train_language, "dev")
    for path in (train_file, dev_file):
        if not path.is_file():
            raise UserError(f"{path}: no such file (--train-language {config.train_language} needs train and dev)")

    set_seed(config.seed)  # the new head is drawn from the seed
    tokenizer, model, new_weights = load_student(config.model or str(default_model()), task)
    teacher, teacher_config = (None, None)
    if settings.teacher:
        teacher, teacher_config = load_teacher(Path(settings.teacher), task, model.config)
    training, train_examples = train_set(task, tokenizer, train_file, config)
    dev = evaluation_set(task, tokenizer, config.train_language, dev_file, config)
    evaluations = {lang: evaluation_set(task, tokenizer, lang, split_path(data_dir, task, lang, task.eval_split), config)
                   for lang in languages}  # fmt: skip

    arguments = TrainingArguments(
        **checkpointing(folder.staging, config.save_steps), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.lr, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        warmup_steps=config.warmup, lr_scheduler_type="linear", num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, eval_strategy="steps" if config.eval_steps else "epoch",
        eval_steps=config.eval_steps, logging_strategy="steps", logging_steps=config.logging_steps,
        logging_first_step=True, report_to="none", seed=config.seed, data_seed=config.seed, use_cpu=use_cpu,
        fp16=fp16, optim="adamw_torch", dataloader_num_workers=0, remove_unused_columns=False,
        label_names=list(task.head.label_names),
    )  # fmt: skip
    join_processes(arguments)
    selection = SelectionCallback(["dev"], f"dev_{task.primary_metric}", config.select)
    with shared_run(folder) as run:
        checkpoint = resume_point(run)
        trainer = DistillationTrainer(
            model=model, args=arguments, train_dataset=training, eval_dataset={"dev": dev.dataset},
            processing_class=tokenizer, data_collator=collator(task, tokenizer, config), compute_metrics=dev.score,
            callbacks=[selection, *balance_callbacks(config.log_balance_every, run, checkpoint)],
            settings=settings, head=task.head, teacher=teacher,
        )  # fmt: skip
        selected, train_seconds = train_and_select(trainer, selection, checkpoint)

        trainer.compute_metrics = None  # it scores the English dev set; each language is scored below
        scores: Dict[str, Dict[str, Any]] = {}
        for language, evaluation in evaluations.items():
            prediction = trainer.predict(evaluation.dataset, metric_key_prefix=f"test_{language}")
            scores[language] = {**evaluation.score(prediction), "examples": evaluation.examples}
        metrics = [name for name in next(iter(scores.values())) if name != "examples"]
        average = {name: float(np.mean([values[name] for values in scores.values()])) for name in metrics}
        method = method_name(settings, teacher_config, model.config)
        zero_shot = {"task": task.name, "method": method, "seed": config.seed, "split": task.eval_split,
                     "train_language": config.train_language, "languages": scores, "average": average}  # fmt: skip
        if run.writer:
            (run.staging / "zero_shot.json").write_text(json.dumps(finite(zero_shot), indent=2) + "\n")
            (run.staging / "zero_shot.md").write_text(
                f"{task.name} {method} seed {config.seed}: {task.eval_split} scores, trained on {config.train_language}\n\n"
                + zero_shot_table(task, scores, average)
            )
        record = {
            **zero_shot,
            "primary_metric": task.primary_metric,
            "dev": selection.history[selected].get("dev", {}),
            "selected_step": selected,
            "train_examples": train_examples,
            "train_features": len(training),
            "model": config.model or str(default_model()),
            "new_weights": new_weights,
            **run_record(trainer, selection, config, train_seconds,
                         [train_file, dev_file, *(e.path for e in evaluations.values())], use_cpu, command, checkpoint),
        }
        return save_run(trainer, run, record, extra_files)


def summary(record: Dict[str, Any], out: Path) -> str:
    """One line: task, method, the average and English score, steps and time, where the results are."""
    metric = record["primary_metric"]
    english = record["languages"].get(record["train_language"], {}).get(metric)
    english_text = f", {record['train_language']} {english:.2f}" if english is not None else ""
    return (
        f"{record['task']} {record['method']} seed {record['seed']}: {record['split']} {metric} average "
        f"{record['average'][metric]:.2f} over {len(record['languages'])} languages{english_text} "
        f"({record['steps']} steps, {record['train_seconds']:.0f} s training) -> {out / 'zero_shot.md'}"
    )

