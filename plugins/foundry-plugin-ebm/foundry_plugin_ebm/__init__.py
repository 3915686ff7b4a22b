"""foundry-plugin-ebm: energy-based models (ebm, deep_ebm) trained contrastively with SGLD from a replay buffer."""
