"""foundry-plugin-gan: generative adversarial networks (gan, dcgan, wgan, lsgan) for Model Foundry."""
