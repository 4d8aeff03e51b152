"""`wyoming-gsv download`: fetch the official pretrained GPT-SoVITS files from the Hugging Face hub.

Files land in `DIR/models/` under the same relative paths they have in the hub repository
(`lj1995/GPT-SoVITS`), which is also upstream's `GPT_SoVITS/pretrained_models/` layout: a user can
copy an existing `pretrained_models` folder into `DIR/models/` instead of downloading.

Every file is checked against the hub's metadata (size, and the sha256 / git-sha1 etag), downloaded
into `DIR/models/.download/` and moved into place only once verified. An interrupted download
resumes from its partial file on the next run; a file that is already present and verified is
not fetched again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

_LOGGER = logging.getLogger(__name__)

HF_REPO = "lj1995/GPT-SoVITS"
DEFAULT_REVISION = "main"
HUBERT_DIR = "chinese-hubert-base"
BERT_DIR = "chinese-roberta-wwm-ext-large"
_HUBERT_FILES = tuple(f"{HUBERT_DIR}/{name}" for name in ("config.json", "preprocessor_config.json", "pytorch_model.bin"))
_BERT_FILES = tuple(f"{BERT_DIR}/{name}" for name in ("config.json", "tokenizer.json", "pytorch_model.bin"))
_SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"

# NLTK data g2p_en needs (the POS tagger for homographs, and cmudict). Fetched where a network exists.
NLTK_PACKAGES = (
    ("averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger_eng"),
    ("averaged_perceptron_tagger", "taggers/averaged_perceptron_tagger.zip"),
    ("cmudict", "corpora/cmudict.zip"),
)

_STATE_DIR = ".download"


@dataclass(frozen=True)
class PretrainedSet:
    """The official base files for one model version, as paths relative to `DIR/models/`."""

    version: str
    gpt: str
    sovits: str
    sv: str | None = None  # speaker-verification model (v2Pro family only)
    hubert_dir: str = HUBERT_DIR
    bert_dir: str = BERT_DIR

    def files(self) -> tuple[str, ...]:
        """Every file of this set, in download order (shared encoders first)."""
        extra = (self.sv,) if self.sv else ()
        return (*_HUBERT_FILES, *_BERT_FILES, self.gpt, self.sovits, *extra)


# THE table of official file names; the server looks for these same paths under DIR/models/.
PRETRAINED: dict[str, PretrainedSet] = {
    s.version: s
    for s in (
        PretrainedSet(
            version="v2",
            gpt="gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
            sovits="gsv-v2final-pretrained/s2G2333k.pth",
        ),
        PretrainedSet(version="v2Pro", gpt="s1v3.ckpt", sovits="v2Pro/s2Gv2Pro.pth", sv=_SV_FILE),
        PretrainedSet(version="v2ProPlus", gpt="s1v3.ckpt", sovits="v2Pro/s2Gv2ProPlus.pth", sv=_SV_FILE),
    )
}
DEFAULT_VERSION = "v2"


class DownloadError(Exception):
    """A download could not be completed; the message says what to do about it."""


class HubUnreachable(DownloadError):
    """No network, or offline mode is on: files already present are kept as they are."""


@dataclass(frozen=True)
class FileResult:
    path: Path
    status: str  # "downloaded" | "up to date" | "verified" | "unchecked"


def files_for_versions(versions: Iterable[str]) -> list[str]:
    """The union of the versions' files, without duplicates, in a stable order."""
    seen: dict[str, None] = {}
    for version in versions:
        if version not in PRETRAINED:
            raise DownloadError(f"unknown model version {version!r}; choose from {', '.join(PRETRAINED)}")
        seen.update(dict.fromkeys(PRETRAINED[version].files()))
    return list(seen)


# ----------------------------------------------------------------------------- verification


def _git_blob_sha1(path: Path) -> str:
    """The hash git (and so the hub, for small non-LFS files) uses as the etag."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    _hash_into(digest, path)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return _hash_into(hashlib.sha256(), path).hexdigest()


def _hash_into(digest, path: Path):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def verify_file(path: Path, etag: str, size: int | None) -> str | None:
    """None if `path` matches the hub's size and etag, else what is wrong with it."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size} bytes, expected {size}"
    etag = etag.lower()
    if len(etag) == 64:
        actual = _sha256(path)
    elif len(etag) == 40:
        actual = _git_blob_sha1(path)
    else:  # an etag we cannot interpret: the size check above is all we can do
        return None
    return None if actual == etag else f"checksum {actual}, expected {etag}"


def _state_path(models_dir: Path, rel: str) -> Path:
    return models_dir / _STATE_DIR / f"{rel}.verified.json"


def is_recorded_as_verified(models_dir: Path, rel: str) -> bool:
    """True if a download (or check) verified `models_dir/rel` as it is now (same size and mtime):
    such a file is complete even if it was moved into place a moment ago."""
    try:
        state = json.loads(_state_path(models_dir, rel).read_text())
        st = (models_dir / rel).stat()
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("size") == st.st_size and state.get("mtime_ns") == st.st_mtime_ns


# ----------------------------------------------------------------------------- the downloader


@dataclass
class Downloader:
    """Fetches hub files into `models_dir`, resumable and verified. One instance per command."""

    models_dir: Path
    repo_id: str = HF_REPO
    revision: str = DEFAULT_REVISION
    endpoint: str | None = None  # None: HF_ENDPOINT from the environment, else the public hub
    token: str | bool | None = None

    def __post_init__(self) -> None:
        self.models_dir = Path(self.models_dir)
        if self.endpoint is None:
            self.endpoint = os.environ.get("HF_ENDPOINT") or None

    @property
    def _state_root(self) -> Path:
        return self.models_dir / _STATE_DIR

    def _state_path(self, rel: str) -> Path:
        return _state_path(self.models_dir, rel)

    def _partial_path(self, rel: str, etag: str) -> Path:
        return self._state_root / f"{rel}.{etag[:16]}.part"

    def _recorded(self, rel: str, dest: Path, etag: str, size: int | None) -> bool:
        """True if a previous run verified this exact file (same etag, size and mtime)."""
        try:
            state = json.loads(self._state_path(rel).read_text())
            st = dest.stat()
        except (OSError, ValueError):
            return False
        return (
            state.get("etag") == etag
            and state.get("size") == st.st_size
            and (size is None or size == st.st_size)
            and state.get("mtime_ns") == st.st_mtime_ns
        )

    def _record(self, rel: str, dest: Path, etag: str) -> None:
        st = dest.stat()
        state_path = self._state_path(rel)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
        tmp.replace(state_path)

    def remote_size(self, rel: str) -> int | None:
        """The size of the hub's file `rel` (a metadata request only)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        url = hf_hub_url(self.repo_id, rel, revision=self.revision, endpoint=self.endpoint)
        what = f"{self.repo_id}/{rel} (revision {self.revision}, {self.endpoint or 'public hub'})"
        return _call_hub(lambda: get_hf_file_metadata(url, token=self.token), what, self.models_dir).size

    def fetch(self, rel: str, on_bytes: Callable[[int], None] | None = None) -> FileResult:
        """Make `models_dir/rel` a verified copy of the hub's file `rel`. `on_bytes(n)` is told
        the file's bytes on disk as they grow (a resumed part first counts what it holds)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        dest = self.models_dir / rel
        url = hf_hub_url(self.repo_id, rel, revision=self.revision, endpoint=self.endpoint)
        what = f"{self.repo_id}/{rel} (revision {self.revision}, {self.endpoint or 'public hub'})"
        try:
            meta = _call_hub(lambda: get_hf_file_metadata(url, token=self.token), what, self.models_dir)
        except HubUnreachable as err:
            if not dest.is_file():
                raise
            _LOGGER.warning("%s is present but was not checked against the hub: %s", dest, err)
            return FileResult(dest, "unchecked")
        if not meta.etag:
            raise DownloadError(f"{what}: the hub sent no ETag, so the file cannot be verified")
        etag, size = meta.etag, meta.size

        if dest.is_file():
            if self._recorded(rel, dest, etag, size):
                return FileResult(dest, "up to date")
            if verify_file(dest, etag, size) is None:  # e.g. copied in by hand
                self._record(rel, dest, etag)
                return FileResult(dest, "verified")
            _LOGGER.warning("%s differs from the hub's copy; downloading it again", dest)

        partial = self._partial_path(rel, etag)
        partial.parent.mkdir(parents=True, exist_ok=True)
        resume = partial.stat().st_size if partial.is_file() else 0
        if size is not None and resume > size:
            resume = 0
        if resume:
            _LOGGER.info("Resuming %s at %d of %s bytes", rel, resume, size)
        with open(partial, "r+b" if resume else "wb") as raw:
            raw.truncate(resume)
            raw.seek(resume)
            f = _CountingFile(raw, on_bytes) if on_bytes is not None else raw
            _call_hub(
                lambda: http_get(
                    meta.location,
                    f,
                    resume_size=resume,
                    headers=build_hf_headers(token=self.token),
                    expected_size=size,
                    displayed_filename=rel,
                ),
                what,
                self.models_dir,
            )
        problem = verify_file(partial, etag, size)
        if problem is not None:
            partial.unlink(missing_ok=True)
            raise DownloadError(f"{what}: downloaded file failed verification ({problem}); run the command again")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(dest)
        self._record(rel, dest, etag)
        for stale in partial.parent.glob(f"{Path(rel).name}.*.part"):  # partials of older hub versions
            stale.unlink(missing_ok=True)
        return FileResult(dest, "downloaded")


class _CountingFile:
    """The file a download writes into, reporting its size as it grows (http_get only writes,
    seeks, tells and truncates)."""

    def __init__(self, raw, on_bytes: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        on_bytes(raw.tell())

    def write(self, data: bytes) -> int:
        written = self._raw.write(data)
        self._on_bytes(self._raw.tell())
        return written

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def _is_network_error(err: BaseException) -> bool:
    """Connection refused, DNS failure, timeout... across the http clients huggingface_hub has used."""
    names = {"TransportError", "ConnectError", "ConnectTimeout", "ConnectionError", "Timeout", "TimeoutException"}
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (OSError, TimeoutError)) or names & {c.__name__ for c in type(seen).__mro__}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _call_hub(call: Callable, what: str, models_dir: Path):
    """Run one hub call, turning its failures into a DownloadError that tells the user what to do."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return call()
    except OfflineModeIsEnabled as err:
        raise HubUnreachable(
            "offline mode is on (HF_HUB_OFFLINE=1): unset it to download, or copy the files into "
            f"{models_dir} by hand (README: Get the models)"
        ) from err
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = " (not found: check --repo and --revision)" if status == 404 else ""
        raise DownloadError(f"{what}: the hub answered HTTP {status}{hint}") from err
    except DownloadError:
        raise
    except Exception as err:
        if _is_network_error(err):
            raise HubUnreachable(
                f"cannot reach {what}: {err}. No network? Set HF_ENDPOINT to a reachable mirror, or copy the "
                f"files by hand into {models_dir} (README: Get the models); a partial download resumes on the next run"
            ) from err
        raise


# ----------------------------------------------------------------------------- NLTK data


def fetch_nltk_data(target: Path | None = None) -> list[str]:
    """Download the NLTK packages g2p_en needs that are not found yet; returns the ones fetched."""
    import nltk

    missing = []
    for package, resource in NLTK_PACKAGES:
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(package)
    for package in missing:
        try:
            ok = nltk.download(package, download_dir=str(target) if target else None, quiet=True, raise_on_error=True)
        except Exception as err:  # nltk raises whatever its http client raised
            ok, why = False, f": {err}"
        else:
            why = ""
        if not ok:
            raise DownloadError(
                f"NLTK package {package!r} could not be downloaded{why}. English text needs it; "
                "fetch it where a network exists (python -m nltk.downloader " + package + ") or set NLTK_DATA"
            )
    return missing


# ----------------------------------------------------------------------------- in the background


@dataclass(frozen=True)
class FileStatus:
    path: str  # relative to DIR/models/
    size: int | None  # bytes on the hub (None: not known yet)
    done: int  # bytes present and verified, or written so far
    state: str  # "waiting" | "checking" | "downloading" | "up to date" | "verified" | "downloaded" | "unchecked"


@dataclass(frozen=True)
class FetchStatus:
    """A snapshot of a `ModelFetcher`, for the log and for pages (`to_dict()` is JSON-ready)."""

    version: str
    models_dir: str
    state: str  # "starting" | "checking" | "downloading" | "waiting to retry" | "done" | "stopped"
    files: tuple[FileStatus, ...]
    error: str | None = None  # the last failure (kept while waiting to retry)
    retry_at: float | None = None  # time.time() of the next attempt while waiting to retry

    @property
    def total_bytes(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(s for s in sizes if s is not None)

    @property
    def done_bytes(self) -> int:
        return sum(f.done for f in self.files)

    @property
    def percent(self) -> float | None:
        total = self.total_bytes
        return None if not total else min(100.0, 100.0 * self.done_bytes / total)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "models_dir": self.models_dir,
            "state": self.state,
            "files": [asdict(f) for f in self.files],
            "total_bytes": self.total_bytes,
            "done_bytes": self.done_bytes,
            "percent": self.percent,
            "error": self.error,
            "retry_at": self.retry_at,
        }


class FetchStopped(Exception):
    """The fetcher was asked to stop in the middle of a download (the partial file is kept)."""


class ModelFetcher:
    """Brings one version's official files into `DIR/models/` on a background thread, as
    `wyoming-gsv download` does (resumable, size and checksum verified), while the server runs.

    Progress goes to the log (a line per file downloaded, and every 10 % of the set's bytes) and
    to `status()`. When the hub cannot be reached or answers with an error, one log line says
    so and the attempt is repeated after a growing delay (`retry_delays`, then the last one).
    `on_complete` runs on the fetcher's thread once every file is in place.
    """

    def __init__(
        self,
        downloader: Downloader,
        version: str,
        *,
        retry_delays: Sequence[float] = (10.0, 30.0, 60.0, 300.0, 900.0),
        nltk: bool = True,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        self.downloader = downloader
        self.version = version
        self.files = files_for_versions([version])
        self.retry_delays = tuple(retry_delays)
        self.nltk = nltk
        self.on_complete = on_complete
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fetch-models-{version}", daemon=True)
        self._state = "starting"
        self._files = {rel: FileStatus(rel, None, 0, "waiting") for rel in self.files}
        self._error: str | None = None
        self._retry_at: float | None = None
        self._logged_tenth = -1

    # ------------------------------------------------------------------ public
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 2.0) -> None:
        """Stop at the next chunk; a partial file is kept and resumed next time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Until the fetcher has finished (done or stopped); False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> FetchStatus:
        with self._lock:
            return FetchStatus(
                version=self.version,
                models_dir=str(self.downloader.models_dir),
                state=self._state,
                files=tuple(self._files[rel] for rel in self.files),
                error=self._error,
                retry_at=self._retry_at,
            )

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._attempt()
            except FetchStopped:
                break
            except DownloadError as err:
                delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
                attempt += 1
                with self._lock:
                    repeated, self._error = self._error == str(err), str(err)
                    self._state, self._retry_at = "waiting to retry", time.time() + delay
                # One clear line per distinct problem; the same one again only at debug level.
                (_LOGGER.debug if repeated else _LOGGER.warning)(
                    "Models %s: %s. Serving on; trying again in %.0f s", self.version, err, delay
                )
                if self._stop.wait(delay):
                    break
                continue
            except Exception:  # a bug of ours must not go unnoticed, nor take the server down
                _LOGGER.exception("Models %s: the background download failed", self.version)
                with self._lock:
                    self._state, self._error = "stopped", "internal error (see the log)"
                return
            with self._lock:
                self._state, self._error, self._retry_at = "done", None, None
            if self.on_complete is not None:
                try:
                    self.on_complete()
                except Exception:
                    _LOGGER.exception("Models %s: preparing the voices after the download failed", self.version)
            return
        with self._lock:
            self._state = "stopped"

    def _attempt(self) -> None:
        self._set_state("checking")
        try:
            sizes = {rel: self.downloader.remote_size(rel) for rel in self.files}
        except HubUnreachable:
            if not all((self.downloader.models_dir / rel).is_file() for rel in self.files):
                raise
            sizes = {}  # every file is present: each one is kept unchecked below
        for rel, size in sizes.items():
            self._update(rel, size=size)
        status = self.status()
        _LOGGER.info(
            "Models %s: checking %d files (%s) in %s",
            self.version, len(self.files), _megabytes(status.total_bytes), self.downloader.models_dir,
        )
        downloaded = 0
        for rel in self.files:
            if self._stop.is_set():
                raise FetchStopped()
            self._update(rel, state="checking")
            result = self.downloader.fetch(rel, on_bytes=lambda done, rel=rel: self._on_bytes(rel, done))
            size = result.path.stat().st_size
            self._update(rel, state=result.status, done=size, size=self._files[rel].size or size)
            if result.status == "downloaded":
                downloaded += 1
                _LOGGER.info("Models %s: %s downloaded and verified (%s)", self.version, rel, _megabytes(size))
            else:
                _LOGGER.debug("Models %s: %s %s", self.version, rel, result.status)
        if self.nltk:
            fetched = fetch_nltk_data()
            if fetched:
                _LOGGER.info("Models %s: fetched the NLTK data %s", self.version, ", ".join(fetched))
        _LOGGER.info(
            "Models %s: all %d files in place (%d downloaded now)", self.version, len(self.files), downloaded
        )

    def _on_bytes(self, rel: str, done: int) -> None:
        if self._stop.is_set():
            raise FetchStopped()
        if self._files[rel].state != "downloading":
            _LOGGER.info(
                "Models %s: downloading %s (%s%s)",
                self.version, rel, _megabytes(self._files[rel].size), f", resuming at {_megabytes(done)}" if done else "",
            )
        self._update(rel, state="downloading", done=done)
        self._set_state("downloading")
        percent = self.status().percent
        if percent is not None and int(percent // 10) > self._logged_tenth:
            self._logged_tenth = int(percent // 10)
            status = self.status()
            _LOGGER.info(
                "Models %s: %d%% (%s of %s)",
                self.version, int(percent), _megabytes(status.done_bytes), _megabytes(status.total_bytes),
            )

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _update(self, rel: str, **changes) -> None:
        with self._lock:
            self._files[rel] = replace(self._files[rel], **changes)


def _megabytes(size: int | None) -> str:
    return "size unknown" if size is None else f"{size / 1e6:.1f} MB"


# ----------------------------------------------------------------------------- CLI


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `wyoming-gsv download`."""
    parser.add_argument("--data-dir", required=True, type=Path, help="files go to DATA_DIR/models/")
    parser.add_argument(
        "--version",
        dest="versions",
        action="extend",
        nargs="+",
        choices=list(PRETRAINED),
        metavar="VERSION",
        help=f"model version(s) to fetch: {', '.join(PRETRAINED)} (default: {DEFAULT_VERSION})",
    )
    parser.add_argument("--repo", default=HF_REPO, help="hub repository (default: %(default)s)")
    parser.add_argument("--revision", default=DEFAULT_REVISION, help="branch, tag or commit (default: %(default)s)")
    parser.add_argument("--endpoint", default=None, help="hub address (default: $HF_ENDPOINT or the public hub)")
    parser.add_argument("--no-nltk", action="store_true", help="do not fetch the NLTK data English text needs")
    parser.add_argument(
        "--nltk-dir", type=Path, default=None, help="where NLTK data goes (default: NLTK's own default folder)"
    )


def run_download(args: argparse.Namespace) -> int:
    """Run `wyoming-gsv download`; returns the process exit code."""
    versions: Sequence[str] = args.versions or [DEFAULT_VERSION]
    models_dir = Path(args.data_dir) / "models"
    downloader = Downloader(models_dir, repo_id=args.repo, revision=args.revision, endpoint=args.endpoint)
    try:
        files = files_for_versions(versions)
        print(f"Fetching {len(files)} files for {', '.join(versions)} from {args.repo} into {models_dir}")
        for rel in files:
            result = downloader.fetch(rel)
            print(f"  {result.status:<12} {rel}")
        if not args.no_nltk:
            fetched = fetch_nltk_data(args.nltk_dir)
            print(f"  NLTK data: {'fetched ' + ', '.join(fetched) if fetched else 'already present'}")
    except DownloadError as err:
        print(f"wyoming-gsv download: error: {err}")
        return 1
    print("Done.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wyoming-gsv download", description=__doc__.splitlines()[0])
    add_download_arguments(parser)
    return run_download(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
