"""The voice studio: a small web app (aiohttp) served by the same process as the Wyoming server.

A protocol layer beside `server`: it shares the voice registry, the bundle cache and the engine,
and imports no torch.
"""
