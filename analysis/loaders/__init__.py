"""One module per kind of checkpoint that :func:`intradist.analysis.loading.load_checkpoint` rebuilds.

:mod:`.safe_reading` reads files weights-only; :mod:`.model` holds what every loader returns
(:class:`~intradist.analysis.loaders.model.LoadedModel`) and builds with; :mod:`.fairseq_checkpoint`,
:mod:`.transformers_folder` and :mod:`.state_dict` rebuild their framework's models;
:mod:`.user_code` imports the ``module:function`` a user names.
"""
