"""Numbers several parts of the studio must agree on: sample rates and queue sizes."""

XTTS_OUTPUT_RATE = 24000  # what XTTS speaks
XTTS_INPUT_RATE = 22050  # reference clips and training audio, as XTTS reads them
SPEECH_MODEL_RATE = 16000  # Whisper, HuBERT and the VAD; also the lowest rate a reference clip may have

DEFAULT_MAX_QUEUE = 32  # requests that may run or wait for the device before new ones get "busy"
GRADIO_QUEUE_SIZE = 64  # Gradio's own event queue in front of that
