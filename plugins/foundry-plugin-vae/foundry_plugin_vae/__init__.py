"""foundry-plugin-vae: variational autoencoders (vae, beta_vae, conditional_vae, vq_vae) for images and vectors."""
