"""Shared studio logic: settings, the resident XTTS engine, audio, text and outputs (no Gradio here)."""

__version__ = "0.1.0"
