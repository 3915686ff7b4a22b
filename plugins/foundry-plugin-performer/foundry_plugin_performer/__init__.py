"""foundry-plugin-performer: Performer (FAVOR+) models for Model Foundry."""
