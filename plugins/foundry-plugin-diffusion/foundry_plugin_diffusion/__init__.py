"""foundry-plugin-diffusion: denoising diffusion and score-based models (ddpm, diffusion, score_diffusion)."""
