"""Studies that train and compare models end to end: the quick start, the CPU translation study, the balance study."""
