"""fairseq plugin for intra-distillation: ``fairseq-train --user-dir user_dir --criterion intra_distillation``.

Importing the package (fairseq does so for ``--user-dir``) registers the criterions
``intra_distillation``, ``label_smoothed_kd`` and ``self_distillation``, the task
``translation_intra_distillation``, and allow-lists the few safe types a fairseq checkpoint
stores so that torch's weights-only loading accepts it. The loss math itself lives in
:mod:`user_dir.losses`, which imports nothing but torch.
"""

from user_dir.checkpoint_safety import allow_fairseq_checkpoint_types

allow_fairseq_checkpoint_types()

from user_dir import criterions, tasks  # noqa: E402,F401  (registration side effects)
from user_dir.criterions.common import report_configuration_errors_in_one_line  # noqa: E402

report_configuration_errors_in_one_line()
