#!/usr/bin/env python
"""Collect evaluation JSON lines into the paper's table (methods × pairs, BLEU mean ± std over seeds).

    .venv/bin/python scripts/results_table.py results/iwslt14.jsonl [--out docs/iwslt14.md]

The same command is installed as ``intradist-results-table``.
"""
from intradist.results import main

if __name__ == "__main__":
    main()
