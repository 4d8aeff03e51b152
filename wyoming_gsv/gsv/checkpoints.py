"""Loading the official GPT ("s1" .ckpt) and SoVITS ("s2" .pth) files, with version detection.

Both are `torch.save` zip archives holding a pickled dict. We never run arbitrary pickled code:
the unpickler only resolves an allow-list of globals (tensor rebuild helpers, storages,
OrderedDict), and the s2 config class `utils.HParams` is mapped to a local attribute-dict shim,
so no `utils` module is ever imported. Some s2 writers replace the zip's leading `PK` by a
2-byte version tag ("05" = v2Pro, ...); we put `PK` back in memory before reading.

Every problem with a file surfaces as one `ModelFileError(path, problem)`.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import ModelFileError

ZIP_MAGIC = b"PK"
HASH_PREFIX_BYTES = 8192

GPT_KEY_PREFIX = "model."
SOVITS_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus", "v3", "v4")
SUPPORTED_SOVITS_VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")

# (symbol_version, model_version, is_lora) of the official pretrained s2 files, keyed by the
# md5 of their first 8192 bytes (upstream `process_ckpt.get_sovits_version_from_path_fast`).
PRETRAINED_SOVITS_HASHES: dict[str, tuple[str, str, bool]] = {
    "dc3c97e17592963677a4a1681f30c653": ("v2", "v2", False),  # s2G488k (v1; fixed by rows)
    "6642b37f3dbb1f76882b69937c95a5f3": ("v2", "v2", False),  # s2G2333k
    "43797be674a37c1c83ee81081941ed0f": ("v2", "v3", False),  # s2Gv3
    "4f26b9476d0c5033e04162c486074374": ("v2", "v4", False),  # s2Gv4
    "c7e9fce2223f3db685cdfa1e6368728a": ("v2", "v2Pro", False),  # s2Gv2Pro
    "66b313e39455b57ab1b0bc0b239c9d0a": ("v2", "v2ProPlus", False),  # s2Gv2ProPlus
}

# The 2-byte tag some writers put in place of "PK" (upstream `process_ckpt.my_save2`).
SOVITS_HEADER_TAGS: dict[bytes, tuple[str, str, bool]] = {
    b"00": ("v1", "v1", False),
    b"01": ("v2", "v2", False),
    b"02": ("v2", "v3", False),
    b"03": ("v2", "v3", True),
    b"04": ("v2", "v4", True),
    b"05": ("v2", "v2Pro", False),
    b"06": ("v2", "v2ProPlus", False),
}

# Size thresholds of the upstream fallback guess for untagged, unknown files.
_V1_MAX_BYTES = 82978 * 1024
_V2_MAX_BYTES = 700 * 1024 * 1024

# v1 SoVITS text embeddings have one row per v1 symbol.
V1_SYMBOL_COUNT = 322
V1_PHONEME_VOCAB = 512

_GPT_MODEL_CONFIG_KEYS = ("vocab_size", "phoneme_vocab_size", "embedding_dim", "hidden_dim",
                          "head", "n_layer", "EOS")
_SOVITS_NOT_GPT = "this is a SoVITS (s2) weights file, expected a GPT (s1) .ckpt"
_SOVITS_REQUIRED_KEYS = (
    "enc_p.ssl_proj.weight",
    "enc_p.proj.weight",
    "quantizer.vq.layers.0._codebook.embed",
    "dec.conv_pre.weight",
    "ssl_proj.weight",
)


# --------------------------------------------------------------------------------------------
# Result types


@dataclass
class GptCheckpoint:
    """A GPT (s1) checkpoint: `Text2SemanticDecoder` weights with the `model.` prefix removed."""

    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    path: Path
    version: str  # "v1" (phoneme vocab 512) or "v2"

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def max_sec(self) -> float | None:
        data = self.config.get("data")
        return data.get("max_sec") if isinstance(data, dict) else None


@dataclass
class SovitsCheckpoint:
    """A SoVITS (s2) weights file: the state dict and its hyper-parameters as plain dicts."""

    weights: dict[str, torch.Tensor]
    config: dict[str, Any]
    version: str  # one of SOVITS_VERSIONS
    is_lora: bool
    path: Path

    @property
    def model_config(self) -> dict[str, Any]:
        return self.config["model"]

    @property
    def sampling_rate(self) -> int:
        return int(self.config["data"]["sampling_rate"])


# --------------------------------------------------------------------------------------------
# Restricted unpickling


class HParamsShim:
    """Stands in for upstream `utils.HParams` while unpickling: just keeps the attribute dict."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.fields = state

    def to_dict(self) -> dict[str, Any]:
        return {key: _plain(value) for key, value in getattr(self, "fields", {}).items()}


def _plain(value: Any) -> Any:
    """Turn nested HParams shims into plain dicts (lists and tuples are walked too)."""
    if isinstance(value, HParamsShim):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


_STORAGE_NAMES = frozenset(
    f"{kind}Storage"
    for kind in ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char", "Byte",
                 "Bool", "Untyped")
)

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("utils", "HParams"): HParamsShim,  # upstream runs from GPT_SoVITS/, so the module is `utils`
    ("GPT_SoVITS.utils", "HParams"): HParamsShim,  # the same class saved from the repository root
}


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals a weights file legitimately needs; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in _STORAGE_NAMES:
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not allow-listed)")


def _allow_list_pickle_module() -> types.ModuleType:
    """A pickle-like module for `torch.load(pickle_module=...)` that uses our Unpickler."""
    module = types.ModuleType("wyoming_gsv_allow_list_pickle")
    module.Unpickler = AllowListUnpickler  # type: ignore[attr-defined]

    def load(file: BinaryIO, **kwargs: Any) -> Any:
        return AllowListUnpickler(file, **kwargs).load()

    module.load = load  # type: ignore[attr-defined]
    return module


# --------------------------------------------------------------------------------------------
# Reading files


def _read_head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(size)
    except OSError as err:
        raise ModelFileError(path, f"cannot read file: {err.strerror or err}") from err


def _torch_load_zip(path: Path, head: bytes) -> Any:
    """Unpickle a torch zip archive (restoring a tagged header) with the allow-list unpickler."""
    try:
        if head[:2] == ZIP_MAGIC:
            source: str | io.BytesIO = str(path)
            if not zipfile.is_zipfile(path):
                raise ModelFileError(path, "not a PyTorch checkpoint "
                                           "(damaged or truncated zip archive)")
        else:
            data = bytearray(path.read_bytes())
            data[:2] = ZIP_MAGIC
            source = io.BytesIO(data)
            if not zipfile.is_zipfile(source):
                raise ModelFileError(path, "not a PyTorch checkpoint (no zip archive inside)")
            source.seek(0)
        loaded = torch.load(source, map_location="cpu", weights_only=False,
                            pickle_module=_allow_list_pickle_module())
    except ModelFileError:
        raise
    except OSError as err:
        raise ModelFileError(path, f"cannot read file: {err.strerror or err}") from err
    except Exception as err:  # torch/zip/pickle raise many types for damaged files
        raise ModelFileError(path, f"cannot unpickle checkpoint: {err}") from err
    _check_bounded(path, loaded)
    return loaded


# A real checkpoint is a dict of a few thousand tensors and a config a few levels deep. A pickle
# may repeat references to one object, so a 2 KB file can stand for a tree of billions of nodes
# that anything walking it (the config conversion, an error message) would expand.
MAX_PICKLED_NODES = 100_000
MAX_PICKLED_DEPTH = 32


def _check_bounded(path: Path, obj: Any) -> None:
    """Walk the unpickled tree, counting shared objects each time they are reached, and stop at
    the first bound crossed; tensors are leaves."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_PICKLED_NODES:
            raise ModelFileError(path, f"checkpoint structure has over {MAX_PICKLED_NODES} entries "
                                       "(not a GPT-SoVITS checkpoint)")
        if depth > MAX_PICKLED_DEPTH:
            raise ModelFileError(path, f"checkpoint structure is nested over {MAX_PICKLED_DEPTH} levels "
                                       "deep (not a GPT-SoVITS checkpoint)")
        if isinstance(value, HParamsShim):
            value = getattr(value, "fields", {})
        if isinstance(value, dict):
            children: Any = (item for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = value
        else:
            continue
        stack.extend((child, depth + 1) for child in children)


def _as_dict(path: Path, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ModelFileError(path, f"checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def _weights(path: Path, checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    weights = checkpoint.get("weight")
    if not isinstance(weights, dict) or not weights:
        raise ModelFileError(path, "no 'weight' state dict in checkpoint")
    bad = [key for key, value in weights.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise ModelFileError(path, f"'weight' entries that are not tensors: {bad[:5]}")
    return dict(weights)


def cast_weights(weights: dict[str, torch.Tensor],
                 dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating-point tensors to `dtype` (None keeps the stored dtype); integer buffers stay."""
    if dtype is None:
        return weights
    return {key: value.to(dtype) if value.is_floating_point() else value
            for key, value in weights.items()}


def _looks_like_gpt(weights: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith(GPT_KEY_PREFIX + "ar_") for key in weights)


def _looks_like_sovits(weights: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith(("enc_p.", "dec.", "quantizer.")) for key in weights)


# --------------------------------------------------------------------------------------------
# GPT (s1)


def load_gpt_checkpoint(path: str | Path,
                        dtype: torch.dtype | None = torch.float32) -> GptCheckpoint:
    """Load a GPT (s1) `.ckpt`; weights are cast to `dtype` (None: as stored, usually fp16)."""
    path = Path(path)
    head = _read_head(path, 2)
    if head[:2] != ZIP_MAGIC:
        if head[:2] in SOVITS_HEADER_TAGS:
            raise ModelFileError(path, _SOVITS_NOT_GPT)
        raise ModelFileError(path, "not a PyTorch checkpoint (no zip header)")
    checkpoint = _as_dict(path, _torch_load_zip(path, head))
    raw = _weights(path, checkpoint)
    if _looks_like_sovits(raw) and not _looks_like_gpt(raw):
        raise ModelFileError(path, _SOVITS_NOT_GPT)
    if not all(key.startswith(GPT_KEY_PREFIX) for key in raw):
        odd = [key for key in raw if not key.startswith(GPT_KEY_PREFIX)][:5]
        raise ModelFileError(path, f"not a GPT (s1) checkpoint: keys without 'model.' prefix {odd}")
    config = checkpoint.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ModelFileError(path, "GPT checkpoint has no 'config' dict with a 'model' section")
    weights = {key[len(GPT_KEY_PREFIX):]: value for key, value in raw.items()}
    _check_gpt_fits(path, config["model"], weights)
    version = "v1" if config["model"]["phoneme_vocab_size"] == V1_PHONEME_VOCAB else "v2"
    return GptCheckpoint(weights=cast_weights(weights, dtype), config=config, path=path,
                         version=version)


def _require_shape(path: Path, weights: dict[str, torch.Tensor], key: str,
                   shape: tuple[int, ...], why: str) -> None:
    actual = tuple(weights[key].shape)
    if actual != shape:
        raise ModelFileError(path, f"config does not fit weights: {key} has shape {list(actual)}, "
                                   f"{why} needs {list(shape)}")


def _check_gpt_fits(path: Path, model: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    missing_config = [key for key in _GPT_MODEL_CONFIG_KEYS if not isinstance(model.get(key), int)]
    if missing_config:
        raise ModelFileError(path, f"config['model'] lacks integer fields {missing_config}")
    dim, vocab, phonemes = model["embedding_dim"], model["vocab_size"], model["phoneme_vocab_size"]
    layers, heads = model["n_layer"], model["head"]
    if model["hidden_dim"] != dim:
        raise ModelFileError(path, f"config hidden_dim {model['hidden_dim']} "
                                   f"!= embedding_dim {dim}")
    if heads <= 0 or dim % heads:
        raise ModelFileError(path, f"config head={heads} does not divide embedding_dim {dim}")
    if model["EOS"] != vocab - 1:
        raise ModelFileError(path, f"config EOS {model['EOS']} is not vocab_size - 1 ({vocab - 1})")

    expected: dict[str, tuple[int, ...]] = {
        "bert_proj.weight": (dim, 1024),
        "bert_proj.bias": (dim,),
        "ar_text_embedding.word_embeddings.weight": (phonemes, dim),
        "ar_text_position.alpha": (1,),
        "ar_audio_embedding.word_embeddings.weight": (vocab, dim),
        "ar_audio_position.alpha": (1,),
        "ar_predict_layer.weight": (vocab, dim),
    }
    for i in range(layers):
        p = f"h.layers.{i}."
        expected |= {
            p + "self_attn.in_proj_weight": (3 * dim, dim),
            p + "self_attn.in_proj_bias": (3 * dim,),
            p + "self_attn.out_proj.weight": (dim, dim),
            p + "self_attn.out_proj.bias": (dim,),
            p + "linear1.weight": (4 * dim, dim),
            p + "linear1.bias": (4 * dim,),
            p + "linear2.weight": (dim, 4 * dim),
            p + "linear2.bias": (dim,),
            p + "norm1.weight": (dim,),
            p + "norm1.bias": (dim,),
            p + "norm2.weight": (dim,),
            p + "norm2.bias": (dim,),
        }
    missing = [key for key in expected if key not in weights]
    if missing:
        raise ModelFileError(path, f"GPT weights lack {len(missing)} keys, e.g. {missing[:3]} "
                                   f"(config says n_layer={layers})")
    extra_layers = {key.split(".")[2] for key in weights if key.startswith("h.layers.")}
    if len(extra_layers) != layers:
        raise ModelFileError(path, f"config n_layer={layers} but weights hold "
                                   f"{len(extra_layers)} layers")
    for key, shape in expected.items():
        _require_shape(path, weights, key, shape,
                       f"config (embedding_dim={dim}, vocab_size={vocab}, "
                       f"phoneme_vocab_size={phonemes})")


# --------------------------------------------------------------------------------------------
# SoVITS (s2)


def sovits_version_from_hash(digest: str) -> tuple[str, str, bool] | None:
    """(symbol_version, model_version, is_lora) for a known pretrained file's 8 KiB md5."""
    return PRETRAINED_SOVITS_HASHES.get(digest.lower())


def guess_sovits_version(head: bytes, size: int) -> tuple[str, str, bool]:
    """Upstream's fast guess from the first 8192 bytes and the file size: hash, tag, size."""
    known = sovits_version_from_hash(hashlib.md5(head[:HASH_PREFIX_BYTES]).hexdigest())
    if known is not None:
        return known
    if head[:2] != ZIP_MAGIC:
        tagged = SOVITS_HEADER_TAGS.get(head[:2])
        if tagged is None:
            raise ValueError(f"unknown header tag {head[:2]!r}")
        return tagged
    if size < _V1_MAX_BYTES:
        return ("v1", "v1", False)
    if size < _V2_MAX_BYTES:
        return ("v2", "v2", False)
    return ("v2", "v3", False)


def load_sovits_checkpoint(path: str | Path,
                           dtype: torch.dtype | None = torch.float32) -> SovitsCheckpoint:
    """Load a SoVITS (s2) `.pth`; v3/v4 and LoRA files are recognised and refused."""
    path = Path(path)
    head = _read_head(path, HASH_PREFIX_BYTES)
    if len(head) < 2:
        raise ModelFileError(path, "file is empty or truncated")
    try:
        _, model_version, is_lora = guess_sovits_version(head, path.stat().st_size)
    except ValueError as err:
        raise ModelFileError(path, f"not a SoVITS weights file ({err}; expected 'PK' or a "
                                   "version tag 00-06)") from err
    _refuse_unsupported(path, model_version, is_lora)

    checkpoint = _as_dict(path, _torch_load_zip(path, head))
    raw = _weights(path, checkpoint)
    if _looks_like_gpt(raw) and not _looks_like_sovits(raw):
        raise ModelFileError(path, "this is a GPT (s1) checkpoint, expected a SoVITS (s2) .pth")
    if "lora_rank" in checkpoint:
        _refuse_unsupported(path, model_version, True)

    try:
        config = _plain(checkpoint.get("config"))
    except RecursionError as err:
        raise ModelFileError(path, "SoVITS config is nested too deeply") from err
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config.get("data"), dict):
        raise ModelFileError(path, "SoVITS file has no 'config' with 'model' and 'data' sections")

    text_embedding = raw.get("enc_p.text_embedding.weight")
    if text_embedding is None:
        # Upstream treats a model without text embedding as the v3-style architecture.
        _refuse_unsupported(path, "v3", is_lora)
        raise AssertionError("unreachable")
    if model_version not in ("v2Pro", "v2ProPlus"):
        model_version = "v1" if text_embedding.shape[0] == V1_SYMBOL_COUNT else "v2"

    _check_sovits_fits(path, config, raw)
    return SovitsCheckpoint(weights=cast_weights(raw, dtype), config=config, version=model_version,
                            is_lora=is_lora, path=path)


def _refuse_unsupported(path: Path, model_version: str, is_lora: bool) -> None:
    if is_lora:
        raise ModelFileError(path, f"SoVITS {model_version} LoRA weights are not supported "
                                   "(only v1, v2, v2Pro and v2ProPlus)")
    if model_version not in SUPPORTED_SOVITS_VERSIONS:
        raise ModelFileError(path, f"SoVITS {model_version} models are not supported yet "
                                   "(only v1, v2, v2Pro and v2ProPlus)")


def _check_sovits_fits(path: Path, config: dict[str, Any],
                       weights: dict[str, torch.Tensor]) -> None:
    missing = [key for key in _SOVITS_REQUIRED_KEYS if key not in weights]
    if missing:
        raise ModelFileError(path, f"SoVITS weights lack keys {missing}")
    model, data = config["model"], config["data"]
    fields = ("inter_channels", "hidden_channels", "upsample_initial_channel")
    absent = [key for key in fields if not isinstance(model.get(key), int)]
    absent += [f"data.{key}"
               for key in ("sampling_rate", "filter_length", "hop_length", "win_length")
               if not isinstance(data.get(key), int)]
    if absent:
        raise ModelFileError(path, f"SoVITS config lacks integer fields {absent}")
    checks = (
        ("enc_p.proj.weight", 0, 2 * model["inter_channels"], "2 * inter_channels"),
        ("enc_p.ssl_proj.weight", 0, model["hidden_channels"], "hidden_channels"),
        ("dec.conv_pre.weight", 0, model["upsample_initial_channel"], "upsample_initial_channel"),
        ("dec.conv_pre.weight", 1, model["inter_channels"], "inter_channels"),
    )
    for key, dim, want, field in checks:
        got = weights[key].shape[dim]
        if got != want:
            raise ModelFileError(path, f"config does not fit weights: {key} dim {dim} is {got}, "
                                       f"config {field} = {want}")

