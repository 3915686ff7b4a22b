"""Model Foundry plugin: the GPT/BERT ``hybrid`` architecture and its ``hybrid`` collator."""
