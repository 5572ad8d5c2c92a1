"""Media items every stage shares: the 90 kHz clock, segments, renditions (no stage imports)."""
