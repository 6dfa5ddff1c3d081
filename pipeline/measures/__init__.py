"""Stage 3: every figure of one hip at one visit (volumes, necrotic fraction, location, angles) and
the typed result model."""
