"""fairseq plugin for intra-distillation: ``fairseq-train --user-dir user_dir --criterion intra_distillation``.

Importing the package (fairseq does so for ``--user-dir``) registers the criterions
``intra_distillation``, ``label_smoothed_kd`` and ``self_distillation``, the task
``translation_intra_distillation``, and allow-lists the few safe types a fairseq checkpoint
stores so that torch's weights-only loading accepts it. Inside a fairseq command
(``fairseq-train``, ``fairseq-generate``, ...) it also makes a bad criterion flag one line and
exit code 2; imported from other code (the analysis loading a fairseq checkpoint) it installs
nothing process-wide. The loss math lives in :mod:`intradist.losses`, which imports only torch.
"""

import logging
import sys
import warnings


def _import_fairseq_quietly() -> None:
    """Import fairseq without its import-time noise (a torch.jit FutureWarning, an INFO line about
    tensorboardX, a DEBUG handler left on the root logger), which would otherwise greet users of
    the transformers and torchvision trainers. Inside fairseq-train, fairseq is already imported."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        logging.disable(logging.INFO)
        try:
            import fairseq.models  # noqa: F401
            import fairseq.tasks  # noqa: F401
        finally:
            logging.disable(logging.NOTSET)
            for handler in [h for h in root.handlers if h not in handlers]:
                root.removeHandler(handler)
            root.setLevel(level)


_import_fairseq_quietly()

from user_dir.checkpoint_safety import allow_fairseq_checkpoint_types  # noqa: E402

allow_fairseq_checkpoint_types()

from user_dir import criterions, tasks  # noqa: E402,F401  (registration side effects)
from user_dir.criterions.common import report_configuration_errors_in_one_line  # noqa: E402

if "fairseq_cli" in sys.modules:  # a fairseq command line is running and imports us through --user-dir
    report_configuration_errors_in_one_line()
