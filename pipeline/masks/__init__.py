"""Stage 2: the head and lesion masks of one hip from what the user gave (label maps, masks, a femur mask), checked."""
