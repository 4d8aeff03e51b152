"""`--fallback-on-error`: when a GPT-SoVITS voice's engine fails, the fallback voice answers instead.

A failure of the engine (a model file that does not load, out of memory, any runtime error) is
the server's problem, not the client's: rather than an error event, the client gets the rest of
its request from the fallback voice, in the same audio format, with one warning in the log. Bad
requests are still refused (they never reach the engine, or raise BadRequest).
"""

from __future__ import annotations

import logging

from .speech import BadRequest, Emit, ShouldStop, Speaker, Speech, SynthesisError

_LOGGER = logging.getLogger(__name__)


class FallbackOnError:
    """A Speaker that runs `speaker` until it fails, then `fallback` for the rest of the request.

    Runs on the engine's worker thread, one sentence at a time. Once the voice has failed, every
    later sentence of the request goes to the fallback (one voice per answer, not a mix). A
    sentence whose audio had partly gone out when it failed (low-latency mode) is not spoken
    again, so no words are heard twice.
    """

    def __init__(self, speaker: Speaker, fallback: Speaker, voice_id: str) -> None:
        self.speaker = speaker
        self.fallback = fallback
        self.voice_id = voice_id
        self.failure: SynthesisError | None = None

    def prepare(self) -> None:
        if self.failure is None:
            try:
                self.speaker.prepare()
            except Exception as err:
                self._fail(err)

    def speak(self, text: str, should_stop: ShouldStop, emit: Emit) -> None:
        if self.failure is None:
            spoke = False

            def tracking_emit(speech: Speech) -> None:
                nonlocal spoke
                spoke = True
                emit(speech)

            try:
                pending = self.speaker.speak(text, should_stop, tracking_emit)
                if pending is not None:  # its failure must be known here, to answer instead
                    pending.wait()
                return
            except Exception as err:
                self._fail(err)
            if spoke:
                return
        if should_stop():
            return
        try:
            self.fallback.speak(text, should_stop, emit)
        except Exception as err:
            # The fallback cannot help either: the client gets the voice's own error.
            _LOGGER.error("The fallback voice failed too: %s", err)
            assert self.failure is not None
            raise self.failure from err

    def _fail(self, err: Exception) -> None:
        """Remember the first failure and log it once; bad requests are not the engine's failure."""
        if isinstance(err, BadRequest):
            raise err
        failure = err if isinstance(err, SynthesisError) else SynthesisError(f"synthesis failed: {err}")
        if failure is not err:
            failure.__cause__ = err
        self.failure = failure
        _LOGGER.warning(
            "Voice %r failed (%s: %s); the fallback voice speaks instead", self.voice_id, failure.code, err
        )
        _LOGGER.debug("Failure of voice %r", self.voice_id, exc_info=err)
