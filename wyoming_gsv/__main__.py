"""Command line: `wyoming-gsv [serve] | synth | voices | phonemize | download`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .synthesis.engine import CUDA_CONCURRENT_REQUESTS
from .synthesis.session import DEFAULT_MAX_CHARS

# The package sets OMP_WAIT_POLICY=PASSIVE (see __init__); nothing here imports torch at the top,
# the commands import it lazily.

_LOGGER = logging.getLogger("wyoming_gsv")

COMMANDS = ("serve", "synth", "voices", "phonemize", "download")
SAMPLING_FLAGS = ("top_k", "top_p", "temperature", "repetition_penalty", "speed", "noise_scale", "seed",
                  "sample_steps")
# Voice settings every command that speaks can override (see voices/params.py).
STREAMING_FLAGS = ("chunking", "min_chunk_tokens")


@dataclass(frozen=True)
class ServeSettings:
    uri: str
    streaming: bool
    zeroconf_name: str | None
    zeroconf_host: str | None
    samples_per_chunk: int
    warm_up: bool
    max_connections: int
    idle_timeout: float


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wyoming-gsv", description="Wyoming TTS server for GPT-SoVITS")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command")
    _add_serve_arguments(commands.add_parser("serve", help="run the Wyoming server (default)"))
    _add_synth_arguments(commands.add_parser("synth", help="speak TEXT with a voice into a WAV file"))
    _add_voices_arguments(commands.add_parser("voices", help="list voices and build their caches"))
    _add_phonemize_arguments(commands.add_parser("phonemize", help="print the phones of TEXT as JSON"))
    _add_download_command(commands.add_parser("download", help="fetch the official pretrained files"))
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, type=Path, help="holds voices/, models/ and cache/")
    parser.add_argument("--hubert", type=Path, help="HuBERT folder (default DATA_DIR/models/chinese-hubert-base)")
    parser.add_argument("--bert", type=Path, help="BERT folder (default DATA_DIR/models/chinese-roberta-wwm-ext-large)")
    parser.add_argument("--gpt", type=Path, help="default GPT weights for voices that name none")
    parser.add_argument("--sovits", type=Path, help="default SoVITS weights for voices that name none")
    parser.add_argument("--sv", type=Path, help="speaker-verification model for v2Pro voices "
                        "(default DATA_DIR/models/sv/pretrained_eres2netv2w24s4ep4.ckpt)")
    parser.add_argument(
        "--allow-path",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a folder besides DATA_DIR that files named by voices (voice.yaml paths, symlinks) may be in; "
        "repeatable. Anything else is refused",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads for inference (default: all cores)")
    parser.add_argument(
        "--decode-threads",
        type=_positive_int,
        help="CPU threads for the GPT's token-by-token steps, at most --threads (default: timed before a "
        "model first speaks, e.g. in the warm-up; the fewest threads within 10%% of the fastest)",
    )
    parser.add_argument(
        "--chunking",
        metavar="{fixed,split,sentence}",
        help="audio streaming within a sentence, overriding each voice's setting: fixed (upstream "
        "streaming mode 3, a chunk every --min-chunk-tokens tokens: the earliest first audio; the "
        "default), split (mode 2: chunks end near a pause), sentence (whole sentences)",
    )
    parser.add_argument(
        "--min-chunk-tokens",
        type=_positive_int,
        help="semantic tokens per streamed chunk at least (25 = 1 s of audio; default: each voice's "
        "min_chunk_tokens)",
    )
    parser.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        help="CPU with 2+ threads: SoVITS vocodes one chunk on half the threads while the GPT makes "
        "the next on the other half (same audio, finished sooner); on by default where it can be, "
        "for streamed requests (whole sentences run one after the other)",
    )
    parser.add_argument(
        "--gpt-int8", action="store_true", help="CPU only: int8 GPT weights (faster, not bit-exact with upstream)"
    )
    parser.add_argument("--no-fallback", action="store_true", help="never offer the piper fallback voice")
    parser.add_argument(
        "--fallback-on-error",
        action="store_true",
        help="when a GPT-SoVITS voice fails (broken model, out of memory), answer with the piper "
        "fallback voice instead of an error (a warning is logged)",
    )
    parser.add_argument("--debug", action="store_true", help="log DEBUG messages")


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument(
        "--uri", default="tcp://0.0.0.0:10200", help="tcp://HOST:PORT, unix://PATH or stdio:// (default: %(default)s)"
    )
    parser.add_argument("--zeroconf", nargs="?", const="gsv", help="advertise over mDNS as NAME (default name: gsv)")
    parser.add_argument("--zeroconf-host", help="IP address to advertise (default: detected)")
    parser.add_argument("--no-streaming", action="store_true", help="do not advertise streaming synthesis")
    parser.add_argument("--voice", help="voice used when a request names none (default: the first)")
    parser.add_argument(
        "--max-chars",
        type=_positive_int,
        default=DEFAULT_MAX_CHARS,
        help="longest text of a synthesize request, and most text a stream may have waiting (default: %(default)s)",
    )
    parser.add_argument(
        "--max-queue", type=_positive_int, default=8, help="requests waiting for the engine (default: %(default)s)"
    )
    parser.add_argument(
        "--concurrent-requests",
        type=_positive_int,
        metavar="N",
        help="requests spoken at once; above 1 their GPT steps are batched together and one request's "
        f"vocoding overlaps the others' GPT (default: {CUDA_CONCURRENT_REQUESTS} on CUDA, 1 on the CPU)",
    )
    parser.add_argument("--samples-per-chunk", type=_positive_int, default=2048, help="audio samples per chunk event")
    parser.add_argument("--no-warm-up", action="store_true", help="listen before the models are loaded")
    from .server.limits import ConnectionLimits

    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=ConnectionLimits.max_connections,
        help="connections open at once; one more is refused (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_seconds,
        default=ConnectionLimits.idle_timeout,
        help="close a connection that sends nothing for this many seconds while nothing is being "
        "spoken for it, or reads nothing for as long while audio waits for it (default: %(default)s)",
    )
    parser.add_argument(
        "--fetch-models",
        metavar="VERSION",
        choices=_model_versions(),
        help="download that version's missing or incomplete official files (as `download --version` "
        "does) in the background while serving; its GPT/SoVITS become the default "
        f"({', '.join(_model_versions())}; hub: $HF_ENDPOINT or the public hub)",
    )
    _add_web_arguments(parser)


def _model_versions() -> list[str]:
    from .download import PRETRAINED

    return list(PRETRAINED)


def _add_web_arguments(parser: argparse.ArgumentParser) -> None:
    from .web.settings import DEFAULT_MAX_UPLOAD_MB

    web = parser.add_argument_group("voice studio (web page)")
    web.add_argument("--web", metavar="[HOST:]PORT", help="serve the voice studio page (default host 127.0.0.1)")
    web.add_argument("--web-token", help="required from page clients (header or cookie); needed off loopback")
    web.add_argument(
        "--web-ingress",
        action="store_true",
        help="Home Assistant add-on: accept page connections only from the ingress gateway and loopback",
    )
    web.add_argument(
        "--web-max-upload-mb",
        type=_positive_int,
        default=DEFAULT_MAX_UPLOAD_MB,
        help="largest upload the page accepts (default: %(default)s)",
    )


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--speed", type=float)
    parser.add_argument("--noise-scale", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--sample-steps", type=int, help="SoVITS v3/v4: Euler steps of the mel sampler (default 32)")


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument("--voice", required=True, help="voice id (folder name under DATA_DIR/voices/)")
    parser.add_argument("--language", help="text language code, for voices that speak several")
    parser.add_argument(
        "--max-chars", type=_positive_int, default=DEFAULT_MAX_CHARS, help="longest text (default: %(default)s)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="WAV file to write")
    _add_sampling_arguments(parser)
    parser.add_argument("text", help="text to speak ('-' reads standard input)")


def _add_voices_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument("--no-build", action="store_true", help="only list; do not build missing bundles")
    parser.add_argument(
        "--check",
        nargs="*",
        metavar="CLIP",
        type=Path,
        help="check reference clips (levels, noise, length, transcript fit) and give advice: every "
        "voice's (no CLIP given) or these files' (with --transcript/--language)",
    )
    parser.add_argument("--transcript", help="with --check CLIP: what is said in the clip")
    parser.add_argument("--language", default="auto", help="with --check CLIP: the transcript's language mode")


def _add_phonemize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--language", default="auto", help="language mode (zh, en, ja, ko, yue, auto, ...)")
    parser.add_argument("--text-version", default="v2", choices=("v1", "v2"))
    parser.add_argument(
        "--upstream",
        action="store_true",
        help="the official frontend's reading: no reading rules, other scripts not read in their own language",
    )
    parser.add_argument("text")


def _add_download_command(parser: argparse.ArgumentParser) -> None:
    from .download import add_download_arguments

    add_download_arguments(parser)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`serve` is the default command: `wyoming-gsv --uri ... --data-dir ...` works as piper's does."""
    argv = list(argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(argv)
    # Checked now rather than after minutes of model loading (or, for sampling, at the first request).
    problem = (_uri_problem(args) or _web_problem(args)) if args.command == "serve" else None
    if problem is None and args.command in ("serve", "synth", "voices"):
        problem = _sampling_problem(args)
    if problem is not None:
        parser.error(problem)
    return args


def _uri_problem(args: argparse.Namespace) -> str | None:
    from urllib.parse import urlparse

    uri = urlparse(args.uri)
    if uri.scheme not in ("tcp", "unix", "stdio"):
        return f"--uri {args.uri!r}: must start with tcp://, unix:// or stdio://"
    if uri.scheme == "tcp":
        try:
            port = uri.port
        except ValueError:
            port = None
        if not uri.hostname or port is None:
            return f"--uri {args.uri!r}: a tcp:// URI needs a host and a port, e.g. tcp://0.0.0.0:10200"
    elif args.zeroconf:
        return f"--zeroconf needs a tcp:// URI, not {args.uri!r}"
    if args.zeroconf_host is not None:
        import ipaddress

        try:
            address = ipaddress.ip_address(args.zeroconf_host)
        except ValueError:
            address = None
        if not isinstance(address, ipaddress.IPv4Address) or address.is_unspecified:
            return f"--zeroconf-host {args.zeroconf_host!r}: must be this machine's IPv4 address, e.g. 192.168.1.20"
    return None


def _web_problem(args: argparse.Namespace) -> str | None:
    from .web.settings import is_loopback, parse_web_address

    if args.web is None:
        return None
    try:
        host, _port = parse_web_address(args.web)
    except ValueError as err:
        return f"--web {err}"
    if not is_loopback(host) and not args.web_ingress and not args.web_token:
        return f"--web {args.web}: a page reachable from the network needs --web-token TOKEN"
    return None


def web_settings(args: argparse.Namespace) -> Any:
    from .web.settings import WebSettings, parse_web_address

    if args.web is None:
        return None
    host, port = parse_web_address(args.web)
    return WebSettings(
        host=host,
        port=port,
        token=args.web_token,
        ingress_only=args.web_ingress,
        max_upload_bytes=args.web_max_upload_mb * 1024 * 1024,
    )


def _sampling_problem(args: argparse.Namespace) -> str | None:
    from .voices.params import VoiceParams

    try:
        VoiceParams().with_overrides(**{name: getattr(args, name, None) for name in SAMPLING_FLAGS + STREAMING_FLAGS})
    except ValueError as err:
        return f"bad sampling or streaming flag: {err}"
    return None


def device_problem(args: argparse.Namespace) -> str | None:
    """A device torch cannot use would leave every voice failing at its first request."""
    device = getattr(args, "device", None)
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        return f"--device {device!r}: {err}"
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"--device {device}: CUDA is not available (no GPU visible, or a CPU-only torch)"
        if parsed.index is not None and parsed.index >= count:
            return f"--device {device}: only {count} CUDA device(s) visible"
    return None


def data_dir_problem(args: argparse.Namespace) -> str | None:
    """A --data-dir that is missing would otherwise serve no voice without a word."""
    data_dir = getattr(args, "data_dir", None)
    if data_dir is None or args.command == "download":  # download creates it
        return None
    if not data_dir.exists():
        return f"--data-dir {data_dir} does not exist"
    if not data_dir.is_dir():
        return f"--data-dir {data_dir} is not a directory"
    return None


def listen_problem(args: argparse.Namespace) -> str | None:
    """A port already taken (the Wyoming one, or the voice studio's), found out in a second,
    before torch is even imported, rather than after minutes of model loading: bind and close at
    once, as asyncio will bind."""
    if args.command != "serve":
        return None
    import errno
    import socket
    from urllib.parse import urlparse

    addresses = []
    uri = urlparse(args.uri)
    if uri.scheme == "tcp":
        addresses.append((f"--uri {args.uri}", uri.hostname or "", uri.port or 0))
    if getattr(args, "web", None):
        from .web.settings import parse_web_address

        try:
            host, port = parse_web_address(args.web)
        except ValueError:
            host = None  # reported by the studio's own settings, as before
        if host is not None:
            addresses.append((f"--web {args.web}", host, port))
    for flag, host, port in addresses:
        try:
            with socket.create_server((host, port)):
                pass
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"cannot listen on {flag}: port {port} is already in use (by another wyoming-gsv, or another program)"
            return f"cannot listen on {flag}: {err.strerror or err}"
    return None


def runtime_settings(args: argparse.Namespace) -> Any:
    from .synthesis.runtime import RuntimeSettings

    overrides = {name: getattr(args, name, None) for name in SAMPLING_FLAGS + STREAMING_FLAGS}
    return RuntimeSettings(
        data_dir=args.data_dir,
        hubert=args.hubert,
        bert=args.bert,
        gpt=args.gpt,
        sovits=args.sovits,
        sv=args.sv,
        allowed_paths=tuple(args.allow_path),
        device=args.device,
        precision=args.precision,
        threads=args.threads or os.cpu_count(),
        decode_threads=args.decode_threads,
        gpt_int8=args.gpt_int8,
        overlap=args.overlap,
        max_queue=getattr(args, "max_queue", 8),
        concurrent_requests=getattr(args, "concurrent_requests", None),
        max_chars=getattr(args, "max_chars", DEFAULT_MAX_CHARS),
        default_voice=getattr(args, "voice", None),
        param_overrides={k: v for k, v in overrides.items() if v is not None},
        use_fallback=not args.no_fallback,
        fallback_on_error=args.fallback_on_error,
        model_version=getattr(args, "fetch_models", None),
    )


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        uri=args.uri,
        streaming=not args.no_streaming,
        zeroconf_name=args.zeroconf,
        zeroconf_host=args.zeroconf_host,
        samples_per_chunk=args.samples_per_chunk,
        warm_up=not args.no_warm_up,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
    )


# ----------------------------------------------------------------------------- commands
def run_serve(args: argparse.Namespace) -> int:
    from .server.handler import HandlerSettings
    from .server.info import ProgramSettings
    from .server.limits import ConnectionLimits
    from .server.run import ZeroconfSettings, serve
    from .synthesis.runtime import Runtime

    settings = serve_settings(args)
    runtime = Runtime(runtime_settings(args))
    fetcher = _start_fetcher(args, runtime)
    try:
        if settings.warm_up:
            runtime.warm_up()  # load models once, before listening
        runtime.start()
        handler = HandlerSettings(
            program=ProgramSettings(streaming=settings.streaming),
            samples_per_chunk=settings.samples_per_chunk,
            limits=ConnectionLimits(max_connections=settings.max_connections, idle_timeout=settings.idle_timeout),
        )
        zeroconf = (
            ZeroconfSettings(name=settings.zeroconf_name, host=settings.zeroconf_host)
            if settings.zeroconf_name
            else None
        )
        wyoming = serve(settings.uri, runtime.service, handler, zeroconf)
        asyncio.run(_until_stopped(_serve_with_studio(wyoming, runtime, web_settings(args))))
    except KeyboardInterrupt:  # Ctrl-C while the models were still loading
        _LOGGER.info("Interrupted")
    except OSError as err:  # e.g. the port was taken while the models loaded
        _LOGGER.error("Cannot serve on %s: %s", settings.uri, err)
        return 1
    finally:
        if fetcher is not None:
            fetcher.stop(timeout=0.5)
        if not runtime.close(timeout=SHUTDOWN_SECONDS):
            _LOGGER.warning("The engine is still inside a model call; leaving without it")
    _LOGGER.info("Stopped")
    return 0


# The engine gets this long to stop (a sentence stops at its next generated token; a vocoder call
# cannot be interrupted) before the process leaves without it.
SHUTDOWN_SECONDS = 1.5


def _exit_now(code: int) -> None:
    """End the process once its own clean-up is done: the interpreter's teardown of torch and
    onnxruntime took 2-6 s on a 2-core machine (past a service's stop budget), and a model call
    still running on the engine thread must not see torch torn down under it."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed already (the stdio:// server closes stdout)
            pass
    os._exit(code)


async def _until_stopped(main: Any) -> None:
    """Run the server until SIGINT or SIGTERM: either one stops it cleanly (connections closed,
    running syntheses cancelled). While it listens, the wyoming server's own SIGTERM handler
    takes over from ours and stops it the same way."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    received: list[str] = []

    def stop(signum: int) -> None:
        if not received:
            received.append(signal.Signals(signum).name)
            _LOGGER.info("%s received: stopping", received[0])
        task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not received:
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _start_fetcher(args: argparse.Namespace, runtime: Any) -> Any:
    """With --fetch-models: the background download (its `status()` is what pages show), started
    now so it runs while the models present load; the voices get ready once it is done."""
    version = getattr(args, "fetch_models", None)
    if not version:
        return None
    from huggingface_hub.utils import disable_progress_bars

    from .download import Downloader, ModelFetcher

    disable_progress_bars()  # the fetcher logs its own progress: lines, not terminal bars
    fetcher = ModelFetcher(Downloader(args.data_dir / "models"), version, on_complete=runtime.prepare_voices)
    runtime.model_fetcher = fetcher
    fetcher.start()
    return fetcher


async def _serve_with_studio(wyoming: Any, runtime: Any, web: Any) -> None:
    """The Wyoming server and, with --web, the voice studio page in the same loop and process."""
    if web is None:
        await wyoming
        return
    from .web.run import start_studio

    studio = await start_studio(runtime, web)
    try:
        await wyoming
    finally:
        await studio.cleanup()


def run_synth(args: argparse.Namespace) -> int:
    from .synthesis.runtime import Runtime
    from .synthesis.speech import SynthesisError

    if not args.output.parent.is_dir():  # found out now, not after the synthesis
        print(f"wyoming-gsv synth: cannot write {args.output}: {args.output.parent} is not a folder", file=sys.stderr)
        return 2
    _exit_at_once_on_ctrl_c("synth")
    text = sys.stdin.read() if args.text == "-" else args.text
    runtime = Runtime(runtime_settings(args))
    if runtime.registry.get(args.voice) is None:
        problem = runtime.registry.problems().get(args.voice, "no such voice folder")
        print(f"wyoming-gsv synth: voice {args.voice!r} is not usable: {problem}", file=sys.stderr)
        return 2
    runtime.start()
    try:
        rate, pcm = asyncio.run(_synthesize(runtime, args.voice, args.language, text))
    except SynthesisError as err:
        print(f"wyoming-gsv synth: {err} ({err.code})", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    with wave.open(str(args.output), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    print(f"Wrote {args.output} ({len(pcm) / 2 / rate:.2f} s at {rate} Hz)")
    return 0


def _exit_at_once_on_ctrl_c(command: str) -> None:
    """Ctrl-C ends a one-shot command at once with the shell's 130, nothing written: no
    KeyboardInterrupt traceback, and no waiting for (or tearing torch down under) a model call
    running on the engine thread, which is what aborted with "terminate called"."""
    import signal

    def interrupted(_signum: int, _frame: Any) -> None:
        sys.stdout.flush()
        print(f"wyoming-gsv {command}: interrupted", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)


async def _synthesize(runtime: Any, voice: str, language: str | None, text: str) -> tuple[int, bytes]:
    """The server's path: a session on the engine, sentences in order."""
    session = runtime.service.open_session(voice, language)
    session.feed(text)
    session.finish()
    rate, parts = 0, []
    async for speech in session.speeches():
        rate = rate or speech.rate
        parts.append(speech.samples.tobytes())
    return rate, b"".join(parts)


def run_voices(args: argparse.Namespace) -> int:
    from .synthesis.runtime import Runtime
    from .synthesis.studio import describe_failure

    if args.check is not None:
        return run_voice_checks(args)
    runtime = Runtime(runtime_settings(args))
    voices = runtime.registry.scan()
    failures = 0
    for voice in (variant for voice in voices for variant in voice.variants()):  # styles as id@style
        status = "ok"
        if not args.no_build:
            try:
                runtime.backend.prepare(voice)
                status = "ready (bundle cached)"
            except Exception as err:  # e.g. a transcript the text frontend cannot read: report, go on
                status, failures = f"UNUSABLE: {describe_failure(err)}", failures + 1
        print(f"{voice.bundle_id}\t{voice.language}\t{voice.description}\t{status}")
    for voice in voices:
        for style, problem in voice.style_problems:
            print(f"{voice.id}@{style}\t-\t-\tLEFT OUT: {problem}")
            failures += 1
    for voice_id, problem in sorted(runtime.registry.problems().items()):
        if voice_id not in {v.id for v in voices}:
            print(f"{voice_id}\t-\t-\tLEFT OUT: {problem}")
            failures += 1
    if not voices and not runtime.registry.problems():
        print(f"No voices in {runtime.registry.voices_dir}")
    return 1 if failures else 0


def run_voice_checks(args: argparse.Namespace) -> int:
    """`voices --check`: the reference check of given clips, or of every voice folder's clips."""
    from .voices import ModelPaths, VoiceRegistry
    from .voices.check import ClipError, check_clip
    from .voices.reference import find_reference

    refused = 0
    for clip in args.check:
        try:
            report = check_clip(clip, args.transcript, args.language)
            line = report.summary()
            refused += report.refused
        except ClipError as err:
            line, refused = f"refused: {err}", refused + 1
        print(f"{clip}\t{line}")
    if args.check:
        return 1 if refused else 0
    registry = VoiceRegistry(ModelPaths.resolve(args.data_dir, gpt=args.gpt, sovits=args.sovits))
    for voice in registry.scan():
        clips = [(voice.id, voice.reference)] + [(f"{voice.id}@{s.name}", s.reference) for s in voice.styles]
        for name, reference in clips:
            print(f"{name}\t{reference.report.summary() if reference.report else 'ok'}")
        for style, problem in voice.style_problems:
            print(f"{voice.id}@{style}\trefused: {problem}")
            refused += 1
    for voice_id, problem in sorted(registry.problems().items()):
        print(f"{voice_id}\tLEFT OUT: {problem}")
        refused += 1
        clip = find_reference(registry.voices_dir / voice_id)
        if clip is not None:  # left out for another reason (e.g. no models yet): still judge the clip
            try:
                print(f"{voice_id}\tclip: {check_clip(clip).summary()}")
            except ClipError as err:
                print(f"{voice_id}\tclip: refused: {err}")
    return 1 if refused else 0


def run_phonemize(args: argparse.Namespace) -> int:
    from .text.frontend import TextFrontend
    from .text.scripts import drop_unspeakable

    try:
        if args.upstream:
            result = TextFrontend(reading_rules=False).phonemize(args.text, args.language, args.text_version)
        else:  # as a request is read: unspeakable characters dropped, other scripts in their language
            text = drop_unspeakable(args.text).text
            result = TextFrontend().phonemize(text, args.language, args.text_version, other_scripts=True)
    except ValueError as err:  # unknown mode, or nothing to speak
        print(f"wyoming-gsv phonemize: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from .download import run_download as download

    return download(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problem = data_dir_problem(args) or listen_problem(args) or device_problem(args)
    if problem is not None:
        print(f"wyoming-gsv {args.command}: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpx2"):  # a line per hub request (the download logs its own progress)
        logging.getLogger(chatty).setLevel(logging.WARNING)
    runners = {
        "serve": run_serve,
        "synth": run_synth,
        "voices": run_voices,
        "phonemize": run_phonemize,
        "download": run_download,
    }
    code = runners[args.command](args)
    if argv is None:  # the program itself, not a caller in Python
        _exit_now(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
