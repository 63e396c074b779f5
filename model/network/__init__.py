"""The V4-Flash network: config, layers, attention with compression and the lightning indexer,
MoE, mHC blocks and the per-sequence decode state; whole, or one tensor-parallel rank's share."""
