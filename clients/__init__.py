"""Client side of fedsim: the cohort ClientApp, local training and DP-SGD."""
