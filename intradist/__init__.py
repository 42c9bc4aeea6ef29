"""intradist: the toolkit's commands around the fairseq plugin (data preparation, evaluation, quick start)."""
