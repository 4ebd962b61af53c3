"""Long-form projects: a script of chapters and segments, imported from text, e-books or subtitles (no Gradio here)."""
