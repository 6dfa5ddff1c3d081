"""Stage 4: follow-up visits against the baseline: rigid registration, change map, regeneration."""
