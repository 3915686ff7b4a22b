"""GPT-2 for Model Foundry: config and presets in :mod:`.config`, the model in :mod:`.model`."""
