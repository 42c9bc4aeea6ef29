"""Recipes that run fairseq: the paper's IWSLT'14 translation recipe, self-distillation rounds, and the shared fairseq-train runner."""
