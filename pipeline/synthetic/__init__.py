"""Synthetic hip MRI with ground truth (the phantom) and the sample cohort written by onfh sample-data."""
