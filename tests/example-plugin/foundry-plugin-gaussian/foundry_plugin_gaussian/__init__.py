"""foundry-plugin-gaussian: the worked example of a plugin for a modality other than text."""
