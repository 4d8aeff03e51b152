"""The voice studio's HTTP API and page. Every URL the page uses is relative, so it works under
Home Assistant's ingress path prefix; slow work (decoding, checks, writes) runs off the loop."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from ..synthesis.speech import SynthesisError
from .security import access_middleware
from .settings import WebSettings
from .actions import StudioActions, StudioError
from .uploads import UploadRefused, UploadedForm, uploaded_form
from .wav_stream import wav_header

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_JSON_BYTES = 256 * 1024
STUDIO_KEY = web.AppKey("studio", StudioActions)
SETTINGS_KEY = web.AppKey("settings", WebSettings)
_T = TypeVar("_T")


def create_app(studio: StudioActions, settings: WebSettings) -> web.Application:
    app = web.Application(middlewares=[access_middleware(settings), _errors], client_max_size=MAX_JSON_BYTES)
    app[STUDIO_KEY] = studio
    app[SETTINGS_KEY] = settings
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_get("/api/info", _info)
    app.router.add_get("/api/voices", _voices)
    app.router.add_get("/api/models", _models)
    app.router.add_post("/api/check", _check)
    app.router.add_post("/api/voices", _create_voice)
    app.router.add_patch("/api/voices/{voice}", _update_voice)
    app.router.add_put("/api/voices/{voice}/params", _save_params)
    app.router.add_delete("/api/voices/{voice}", _delete_voice)
    app.router.add_post("/api/voices/{voice}/styles", _add_style)
    app.router.add_delete("/api/voices/{voice}/styles/{style}", _delete_style)
    app.router.add_get("/api/voices/{voice}/preview", _preview)
    return app


# ----------------------------------------------------------------------------- errors
def _error(message: str, status: int = 400, field: str | None = None, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "field": field, **extra}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every refusal as JSON the page shows next to the field at fault; nothing half-written."""
    try:
        return await handler(request)
    except UploadRefused as err:
        _LOGGER.warning("Studio upload refused (%s): %s", err.field or "form", err)
        return _error(str(err), err.status, err.field)
    except StudioError as err:
        _LOGGER.warning("Studio request refused (%s): %s", err.field or "-", err)
        return _error(str(err), err.status, err.field, code=err.code)
    except SynthesisError as err:
        _LOGGER.warning("Studio preview refused (%s): %s", err.code, err)
        return _error(str(err), 400, "text", code=err.code)
    except web.HTTPException as err:
        if err.status >= 400 and request.path.startswith("/api/"):
            return _error(err.reason, err.status)
        raise
    except (ConnectionError, asyncio.CancelledError):
        raise  # the browser went away; uploads clean up after themselves
    except Exception as err:
        _LOGGER.exception("Studio request %s %s failed", request.method, request.path)
        return _error(f"internal error: {type(err).__name__}: {err}", 500)


async def _blocking(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StudioError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise StudioError("the request body must be a JSON object")
    return body


def _form(request: web.Request) -> Any:
    studio, settings = request.app[STUDIO_KEY], request.app[SETTINGS_KEY]
    return uploaded_form(request, studio.upload_dir, settings.max_upload_bytes)


# ----------------------------------------------------------------------------- page
async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _info(request: web.Request) -> web.Response:
    studio, settings = request.app[STUDIO_KEY], request.app[SETTINGS_KEY]
    return web.json_response({**studio.info(), "max_upload_bytes": settings.max_upload_bytes})


async def _voices(request: web.Request) -> web.Response:
    studio = request.app[STUDIO_KEY]
    return web.json_response({"voices": await _blocking(studio.voices), "models_download": studio.models_download()})


async def _models(request: web.Request) -> web.Response:
    return web.json_response(await _blocking(request.app[STUDIO_KEY].model_files))


# ----------------------------------------------------------------------------- clips
async def _check(request: web.Request) -> web.Response:
    """The reference check and waveform of a clip, before anything is saved."""
    async with _form(request) as form:
        clip = _required_file(form, "clip")
        report = await _blocking(request.app[STUDIO_KEY].check, clip, form.text("transcript"), _window(form))
    return web.json_response(report)


def _required_file(form: UploadedForm, name: str) -> Path:
    path = form.file(name)
    if path is None:
        raise UploadRefused("choose or record a clip first", name)
    return path


def _window(form: UploadedForm, prefix: str = "window") -> tuple[float, float] | None:
    start, end = form.text(f"{prefix}_start"), form.text(f"{prefix}_end")
    if not start and not end:
        return None
    try:
        return float(start), float(end)
    except ValueError:
        raise UploadRefused("the clip window must be two numbers of seconds", "window") from None


# ----------------------------------------------------------------------------- voices
async def _create_voice(request: web.Request) -> web.Response:
    studio = request.app[STUDIO_KEY]
    async with _form(request) as form:
        if not form.flag("consent"):
            raise UploadRefused("tick the box to confirm you have this speaker's permission", "consent")
        clip = _required_file(form, "clip")
        voice = await _blocking(
            studio.create_voice,
            form.text("id"),
            clip,
            form.text("transcript"),
            language=form.text("language") or None,
            prompt_language=form.text("prompt_language") or None,
            description=form.text("description"),
            window=_window(form),
            gpt=form.file("gpt") or form.text("gpt_path") or None,
            sovits=form.file("sovits") or form.text("sovits_path") or None,
            aux_clips=tuple(form.files.get("aux_clips", ())),
            overwrite=form.flag("overwrite"),
        )
    return web.json_response(voice, status=201)


async def _update_voice(request: web.Request) -> web.Response:
    body = await _json_body(request)
    voice = await _blocking(request.app[STUDIO_KEY].update_voice, request.match_info["voice"], body)
    return web.json_response(voice)


async def _save_params(request: web.Request) -> web.Response:
    body = await _json_body(request)
    voice = await _blocking(request.app[STUDIO_KEY].save_params, request.match_info["voice"], body)
    return web.json_response(voice)


async def _delete_voice(request: web.Request) -> web.Response:
    await _blocking(request.app[STUDIO_KEY].delete_voice, request.match_info["voice"])
    return web.json_response({"deleted": request.match_info["voice"]})


async def _add_style(request: web.Request) -> web.Response:
    studio = request.app[STUDIO_KEY]
    async with _form(request) as form:
        clip = _required_file(form, "clip")
        voice = await _blocking(
            studio.add_style,
            request.match_info["voice"],
            form.text("style"),
            clip,
            form.text("transcript"),
            window=_window(form),
            overwrite=form.flag("overwrite"),
        )
    return web.json_response(voice, status=201)


async def _delete_style(request: web.Request) -> web.Response:
    voice = await _blocking(
        request.app[STUDIO_KEY].delete_style, request.match_info["voice"], request.match_info["style"]
    )
    return web.json_response(voice)


# ----------------------------------------------------------------------------- preview
async def _preview(request: web.Request) -> web.StreamResponse:
    """Speech streamed as a WAV while it is made: the page plays the first sentence before the
    last is spoken. Goes through the engine's queue like a Wyoming request."""
    query = request.query
    text = query.get("text", "").strip()
    if not text:
        raise StudioError("type a sentence to hear", field="text")
    overrides = {name: value for name, value in query.items() if name not in ("text", "style", "language")}
    session = request.app[STUDIO_KEY].open_preview(
        request.match_info["voice"],
        text,
        style=query.get("style") or None,
        language=query.get("language") or None,
        overrides=overrides,
    )
    response: web.StreamResponse | None = None
    try:
        async for piece in session.pieces():
            if piece.speech is None:
                continue
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})
                response.enable_chunked_encoding()
                await response.prepare(request)
                await response.write(wav_header(piece.speech.rate))
            await response.write(piece.speech.samples.tobytes())
    except (ConnectionError, asyncio.CancelledError):
        session.cancel()  # the page went away: free the engine for the next request
        raise
    except SynthesisError as err:
        session.cancel()
        if response is None:
            raise  # nothing sent yet: the page gets the message
        _LOGGER.warning("Preview of %r stopped mid-way: %s", request.match_info["voice"], err)
        return response
    if response is None:
        raise StudioError("the preview produced no audio", field="text")
    await response.write_eof()
    return response
