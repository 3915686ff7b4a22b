"""foundry-plugin-flow: normalizing flows (RealNVP, Glow, MAF, NSF) for Model Foundry."""
