"""Product logic: text stream -> sentences -> engine jobs -> audio, on one engine per device.

`runtime.Runtime` builds everything a process needs (voice registry, GPT-SoVITS backend,
engine workers, `service.TtsService`); the server and the CLI both speak through it.
"""
