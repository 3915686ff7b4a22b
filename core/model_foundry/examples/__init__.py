"""Small, runnable data preparations for the example configs (``python -m model_foundry.examples.<name>``)."""
