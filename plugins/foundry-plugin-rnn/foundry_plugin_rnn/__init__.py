"""Recurrent language models (LSTM, GRU, Elman RNN) for Model Foundry."""
