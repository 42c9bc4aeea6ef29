"""Parameter sensitivity and contribution balance of trained models (issue 4 builds it out)."""
