"""Training: dataset building, the fine-tuning runner and checkpoint samples (no Gradio here)."""
