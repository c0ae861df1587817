"""Model definitions: pure Flax linen modules whose parameters carry logical axis names."""
