"""fairseq tasks of the plugin."""

from user_dir.tasks import translation_intra_distillation  # noqa: F401
