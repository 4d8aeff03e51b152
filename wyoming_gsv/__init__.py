"""Wyoming text-to-speech server running GPT-SoVITS voice cloning in-process."""

__version__ = "0.1.0"
