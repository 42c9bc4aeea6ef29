"""XTREME data of the zero-shot cross-lingual experiments: PAN-X NER and TyDiQA-GoldP, in plain formats.

The zero-shot experiments of Xu, Koehn & Murray (EMNLP 2022) (``Zero_Shot_Cross_Lingual/`` in
fe1ixxu/Intra-Distillation, built on google-research/xtreme) fine-tune on English and evaluate on every
language. The data here is what xtreme's ``scripts/download_data.sh`` and ``utils_preprocess.py``
(``panx_preprocess``, ``tydiqa_preprocess``) produce, written in the layout below:

- **PAN-X** (WikiANN in the balanced splits of Rahimi et al., 2019). Its only source is
  ``AmazonPhotos.zip``, downloaded by hand from a shared Amazon Drive folder (:data:`PANX_URL`, as the
  xtreme README and download script say); nothing can fetch it automatically. The zip holds
  ``panx_dataset/{lang}.tar.gz``, each with the members ``train``, ``dev`` and ``test``: one
  ``{lang}:token<TAB>TAG`` line per token and a blank line between sentences. Each becomes
  ``panx/{lang}/{split}.tsv``: ``token<TAB>TAG`` lines without the ``{lang}:`` prefix (xtreme strips it
  too), a blank line after each sentence, tags from :data:`PANX_TAGS` (IOB2). A line that is not
  ``{lang}:token<TAB>TAG`` with one of those tags is refused, naming the file and line.
- **TyDiQA-GoldP v1.1** (SQuAD v1.1 JSON). ``tydiqa-goldp-v1.1-train.json`` holds the training
  questions of all nine languages; a question's language is the part of its id before the first ``-``
  (``english-...``), the test of xtreme's ``tydiqa_preprocess`` and of TyDi QA's own
  ``gold_passage_baseline/split_predictions.py``. ``tydiqa/en/train.json`` is its English questions
  only (the zero-shot setting trains on English). ``tydiqa-goldp-v1.1-dev.tgz`` holds
  ``tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{language}.json`` for the nine languages of
  :data:`TYDIQA_LANGUAGES`; each becomes ``tydiqa/{code}/dev.json`` (two-letter codes, as xtreme
  renames them). ``tydiqa/en/train.json`` is written whenever TyDiQA is, whatever ``--languages`` says.
  Both keep the source's articles, titles, contexts, ids, questions and answers, and only those keys
  (``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
  [{"text", "answer_start"}]}]}]}]}``); every answer must sit at its ``answer_start`` in its context
  (xtreme asserts the same), and every dev question's id must name the file's language.

Checksums. TensorFlow Datasets publishes the SHA-256 of both TyDiQA-GoldP files
(``tensorflow_datasets/url_checksums/tydi_qa.txt``; Hugging Face ``datasets`` gives the same value for
the train file), so they are checked against :data:`KNOWN_SHA256`; a downloaded file that fails is
deleted so that a rerun downloads it again. No published checksum of ``AmazonPhotos.zip`` or of its
members is known (xtreme, Hugging Face's loaders and the authors give none), so none is guessed:
the SHA-256 of each ``panx_dataset/{lang}.tar.gz`` a language is first converted from is recorded in
``OUT/xtreme-archives.sha256`` (``sha256sum`` format, with the TyDiQA files' values), and every later
run that reads that member, from the zip or from a folder of ``{lang}.tar.gz`` files, is refused when
it differs. The members are recorded rather than the zip, because a zip made again from the same
files (as a shared-drive download may be) differs in its bytes but not in its data; the zip's own
SHA-256 is kept in the manifest.

Layout of ``OUT`` (default ``data-bin/xtreme``). Each file, and each PAN-X language folder, is written
under a ``.partial`` name and renamed when complete, so an interrupted run leaves only ``.partial``
items, and a rerun skips what is complete (and downloads nothing when TyDiQA is complete)::

    panx/{lang}/{train,dev,test}.tsv     CoNLL-style token<TAB>TAG, UTF-8
    tydiqa/{code}/dev.json               nine languages: ar bn en fi id ko ru sw te
    tydiqa/en/train.json                 the English training questions
    archives/                            the downloaded TyDiQA files (none copied from --archives)
    xtreme-archives.sha256               the checksum record
    xtreme-manifest.json                 sources, their SHA-256 and the counts of every written file

Modules: :mod:`.files` (UTF-8 sources, files written whole, the checksum record and the manifest),
:mod:`.panx` and :mod:`.tydiqa` (each task's source, conversion and checks), :mod:`.command`
(``intradist prepare xtreme``).
"""
