"""Saving and loading models as checkpoint directories.

A checkpoint directory holds ``config.yaml`` (the resolved config), ``model.safetensors``
(the weights; never a pickle), the tokenizer files when there is a tokenizer, and
``foundry.json`` (versions, architecture, parameter count, metrics). Writes go to a
temporary sibling directory that is renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import tempfile
import time
from importlib import metadata
from typing import Any, Callable, Iterator, Mapping

import attrs

from model_foundry.config import FoundryConfig, load_model_config, read_yaml
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.registry import Registry, find_architecture, get_registry

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "foundry.json"
MAX_META_BYTES = 2**20
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit
# Bytes per element of each safetensors dtype.
# Tensors of a saved model are placed at multiples of this many bytes where they can be (see _header_padding).
ALIGNMENT = 64
PADDING_KEY = "padding"
_SAFETENSORS_DTYPES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "int16": "I16", "uint16": "U16", "float16": "F16", "bfloat16": "BF16", "int32": "I32", "uint32": "U32",
    "float32": "F32", "int64": "I64", "uint64": "U64", "float64": "F64", "complex64": "C64",
}
SAFETENSORS_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike[str], durable: bool = True) -> Iterator[str]:
    """Yield a temporary directory that replaces ``directory`` only if the block succeeds.

    The replacement is atomic for any crash of the process. ``durable`` also flushes every file to
    disk before the rename, so that it survives a crash of the machine; without it the files reach
    the disk when the system writes them back (within seconds on Linux), which spares a training
    run's intermediate checkpoints the wait (docs/checkpoints.md)."""
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        yield staging
        if durable:
            flush_to_disk(staging)
        if os.path.isdir(directory):
            retired = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
            os.replace(directory, os.path.join(retired, "previous"))
            os.replace(staging, directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def flush_to_disk(root: str) -> None:
    """Wait until every file under ``root`` is on the disk (``fsync``)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())


def write_yaml(path: str, data: Mapping[str, Any]) -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    buffer = io.StringIO()
    yaml.dump(dict(data), buffer)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


def read_yaml_plain(path: str) -> Any:
    """A checkpoint's config.yaml as plain data, read like any config (a mapping; no type tags, bounded
    aliases and nesting): a ConfigError located in the file otherwise."""
    return read_yaml(path).data


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def save(
    model: Any,
    directory: str | os.PathLike[str],
    tokenizer: Any = None,
    metrics: Mapping[str, Any] | None = None,
    config: FoundryConfig | None = None,
    extra: Callable[[str], None] | None = None,
    data_info: Mapping[str, Any] | None = None,
    durable: bool = True,
) -> str:
    """Save ``model`` (and its tokenizer) as a checkpoint directory, atomically.

    ``config`` is the whole run config to record (by default, the model's own section);
    ``extra(staging_dir)`` may add files (training state) inside the same atomic write;
    ``data_info`` (the trained data's ``LoadedData.info``: sample rate, classes, ...) is kept in
    ``foundry.json`` for the sample writers; ``durable=False`` leaves flushing the files to disk to
    the system (see :func:`atomic_directory`). Returns the directory.
    """
    registry = get_registry()
    model_config = model.config
    found = find_architecture(model_config.architecture, registry)
    if isinstance(found, str):  # several distributions provide it: the one whose config class this model has
        same_class = [entry for entry in registry.architectures.get(model_config.architecture, [])
                      if entry.schema.config_class is type(model_config.params)]
        found = same_class[0] if len(same_class) == 1 else found
    plugin = found.plugin if not isinstance(found, str) else None
    full = config.to_dict() if config is not None else {}
    full["model"] = model_config.to_dict()
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": model_config.architecture,
        "distribution": plugin.distribution if plugin else None,
        "distribution_version": plugin.version if plugin else None,
        "core_version": distribution_version("model-foundry"),
        "num_parameters": int(model.num_parameters()) if hasattr(model, "num_parameters") else None,
        "metrics": dict(metrics or {}),
        "data_info": _plain_info(data_info or {}),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_directory(directory, durable=durable) as staging:
        write_yaml(os.path.join(staging, CONFIG_FILE), full)
        _write_weights(model, os.path.join(staging, WEIGHTS_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if extra is not None:
            extra(staging)
        with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
    return os.fspath(directory)


def _write_weights(model: Any, path: str) -> None:
    """The model's state dict as safetensors, in the layout of ``safetensors.torch.save_model``: an
    entry that is the very tensor of an earlier one (tied weights) is written once and named in the
    metadata as an alias of it. Entries that share a storage otherwise -- on a GPU cuDNN packs an RNN's weights into one buffer, each a view of part
    of it -- are copied, where ``save_model`` would refuse to write them at all."""
    from collections import Counter

    import torch
    from safetensors.torch import save_file

    def storage(tensor: torch.Tensor) -> tuple[Any, ...]:
        return tensor.device, tensor.untyped_storage().data_ptr()

    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": "pt"}
    first: dict[tuple[Any, ...], str] = {}
    for name, tensor in model.state_dict().items():
        view = (*storage(tensor), tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if tensor.numel() and view in first:
            metadata[name] = first[view]
        else:
            first[view] = name
            tensors[name] = tensor
    sharing = Counter(storage(tensor) for tensor in tensors.values() if tensor.numel())
    written = {name: tensor.clone() if sharing[storage(tensor)] > 1 else tensor.contiguous() for name, tensor in tensors.items()}
    metadata[PADDING_KEY] = " " * _header_padding(written, metadata)
    save_file(written, path, metadata=metadata)


def _header_padding(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> int:
    """Spaces that make the data of a safetensors file start at a multiple of :data:`ALIGNMENT` bytes.

    ``load`` uses a memory-mapped tensor in place when it lies at such an address and copies it
    otherwise (matrix kernels sum in another order on memory aligned otherwise, and the outputs
    of a loaded model must equal the saved one's), so the padding spares most copies: after it,
    every tensor lies aligned that only follows tensors of whole multiples of the alignment. The
    header's length is predicted from safetensors' layout (compact JSON; tensors by element size,
    then name; the header padded to 8 bytes); were the prediction wrong, loading would copy more.
    """
    header: dict[str, Any] = {"__metadata__": {**metadata, PADDING_KEY: ""}}
    offset = 0
    for name, tensor in sorted(tensors.items(), key=lambda item: (-item[1].element_size(), item[0])):
        size = tensor.numel() * tensor.element_size()
        dtype = str(tensor.dtype).removeprefix("torch.")
        header[name] = {"dtype": _SAFETENSORS_DTYPES.get(dtype, dtype), "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    length = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return next(extra for extra in range(ALIGNMENT) if (8 + -(-(length + extra) // 8) * 8) % ALIGNMENT == 0)


def is_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return os.path.isfile(os.path.join(directory, META_FILE)) and os.path.isfile(os.path.join(directory, WEIGHTS_FILE))


def check_links(directory: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint directory holding a symlink that leads out of it (``config.yaml -> /etc/passwd``)
    or nowhere (a loop): loading reads only the directory's own files."""
    directory = os.fspath(directory)
    root = os.path.realpath(directory)
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise FoundryError(f"cannot read checkpoint directory {directory!r}: {exc.strerror or exc}") from None
    for name in sorted(names):
        path = os.path.join(directory, name)
        if not os.path.islink(path):
            continue
        try:
            target = os.path.realpath(path, strict=True)
        except OSError as exc:
            problem = "is a symlink loop" if exc.errno == errno.ELOOP else f"is a broken symlink ({exc.strerror})"
            raise FoundryError(f"{path!r} {problem}; replace it with the file itself") from None
        if os.path.commonpath([root, target]) != root:
            raise FoundryError(f"{path!r} is a symlink to {target!r}, outside the checkpoint directory; a checkpoint "
                               "is read only from its own files: copy the file in instead of linking it")


def _plain_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able entries of a data ``info`` (numpy scalars as Python numbers, tuples as lists)."""
    import numpy as np

    plain: dict[str, Any] = {}
    for key, value in info.items():
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (bool, int, float, str)) or (
            isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value)
        ):
            plain[str(key)] = value
    return plain


def read_meta(directory: str) -> dict[str, Any]:
    """``foundry.json``, checked: a JSON object with an integer ``format_version`` this version reads and
    an ``architecture`` name."""
    path = os.path.join(directory, META_FILE)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_META_BYTES + 1)
    except OSError as exc:
        raise FoundryError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_META_BYTES:
        raise FoundryError(f"{path!r} is larger than {MAX_META_BYTES // 2**20} MiB; it is not a checkpoint's {META_FILE}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FoundryError(f"{path!r} is not UTF-8 text ({exc.reason}); the checkpoint is damaged") from None
    except ValueError as exc:
        raise FoundryError(f"{path!r} is not valid JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(meta, dict):
        raise FoundryError(f"{path!r} must hold a JSON object, got {type(meta).__name__}; the checkpoint is damaged")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FoundryError(f"{path!r}: format_version must be a positive integer, got {version!r}; the checkpoint is damaged")
    if version > FORMAT_VERSION:
        raise FoundryError(
            f"{path!r} has format_version {version}, written by a newer model-foundry (this one, "
            f"{distribution_version('model-foundry')}, reads up to {FORMAT_VERSION}); upgrade: pip install -U model-foundry"
        )
    if not isinstance(meta.get("architecture"), str):
        raise FoundryError(f"{path!r}: 'architecture' must be an architecture name, got {meta.get('architecture')!r}")
    return meta


@attrs.frozen
class SavedTensor:
    """One entry of a safetensors header: its dtype name (``F32``, ``I64``, ...) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_weights_header(path: str) -> tuple[dict[str, SavedTensor], dict[str, str]]:
    """The tensors a safetensors file declares (name -> :class:`SavedTensor`) and its metadata, read from
    the header alone and checked against the file's size, so that nothing is allocated for a damaged,
    truncated or foreign file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
                raise FoundryError(f"{path!r} is not a safetensors file (or is truncated: {size:,} bytes); the "
                                   "checkpoint is damaged")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise FoundryError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except ValueError:  # JSON or UTF-8
        raise FoundryError(f"{path!r} is not a safetensors file (its header is not JSON); the checkpoint is damaged") from None
    if not isinstance(header, dict):
        raise FoundryError(f"{path!r} is not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - length
    tensors: dict[str, SavedTensor] = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            valid = dtype in SAFETENSORS_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
            valid = valid and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            raise FoundryError(f"{path!r}: the header entry of tensor {name!r} is malformed; the checkpoint is damaged")
        if end > data_size or end - begin != math.prod(shape) * SAFETENSORS_BYTES[dtype]:
            raise FoundryError(f"{path!r} is truncated or damaged: tensor {name!r} ({dtype} {list(shape)}) lies beyond "
                               f"the end of the file or does not fit its bytes")
        tensors[name] = SavedTensor(dtype, shape)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FoundryError(f"{path!r}: the header's metadata is malformed; the checkpoint is damaged")
    return tensors, metadata


def load(directory: str | os.PathLike[str], device: Any = None, registry: Registry | None = None) -> Any:
    """Rebuild a saved model (in eval mode) from a checkpoint directory, through the registry.

    Directories that are not Model Foundry checkpoints are offered to the installed
    checkpoint converters (e.g. a transformers GPT-2 or BERT directory). Anything wrong with the
    directory is a :class:`FoundryError` saying what (see docs/checkpoints.md).
    """
    directory = os.fspath(directory)
    registry = registry or get_registry()
    if not os.path.isdir(directory):
        raise FoundryError(f"checkpoint directory not found: {directory!r}")
    check_links(directory)
    if os.path.exists(os.path.join(directory, META_FILE)):
        model = _read(directory, registry_for(directory, registry))
    else:
        model = _convert(directory, registry)
    if device is not None:
        model = model.to(device)
    return model.eval()


def registry_for(directory: str, registry: Registry) -> Registry:
    """``registry`` as a checkpoint sees it: where several distributions provide its architecture,
    the one ``foundry.json`` records (the one it was saved with) is chosen, with a warning saying so."""
    import warnings

    from model_foundry.errors import FoundryWarning

    check_links(directory)
    meta = read_meta(directory)
    architecture, distribution = meta["architecture"], meta.get("distribution")
    preferred = registry.preferring(architecture, distribution)
    if preferred is not registry:
        others = sorted({entry.plugin.distribution for entry in registry.architectures[architecture]} - {distribution})
        warnings.warn(f"architecture {architecture!r} is provided by {distribution} and by {', '.join(others)}; "
                      f"{directory} was saved with {distribution}, which is used", FoundryWarning, stacklevel=3)
    return preferred


def _convert(directory: str, registry: Registry) -> Any:
    """A foreign directory, imported by the first installed converter that recognises it."""
    from model_foundry.records import resolve

    for converter, _info in registry.converters:
        if resolve(converter.detect)(directory):
            return resolve(converter.convert)(directory)
    raise FoundryError(
        f"{directory!r} is not a Model Foundry checkpoint (no {META_FILE} and {WEIGHTS_FILE}), "
        "and no installed checkpoint converter recognises it"
    )


def _read(directory: str, registry: Registry) -> Any:
    """A Model Foundry checkpoint, every file checked before the model is built: foundry.json, the
    config's model section, then the weights' header against the model built on the meta device
    (names, shapes, dtypes), so that a config saying ``layers: 100000`` is refused before anything
    is allocated."""
    meta = read_meta(directory)
    architecture = meta["architecture"]
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FoundryError(f"{directory!r} has no {CONFIG_FILE}; the checkpoint is incomplete")
    model_data = read_yaml_plain(config_path).get("model")
    if not isinstance(model_data, dict):
        raise FoundryError(f"{config_path!r} has no 'model' mapping; the checkpoint is damaged")
    if model_data.get("architecture") != architecture:
        raise FoundryError(
            f"{directory!r} is inconsistent: {META_FILE} says architecture {architecture!r}, {CONFIG_FILE} says "
            f"{model_data.get('architecture')!r}; the checkpoint is damaged"
        )
    found = find_architecture(architecture, registry)
    if isinstance(found, str):
        if registry.architectures.get(architecture):  # several distributions, none the one it was saved with
            raise FoundryError(f"cannot load {directory!r}: {found}")
        dist = meta.get("distribution") or "the plugin that provides it"
        raise FoundryError(
            f"{directory!r} holds a {architecture!r} model, but no installed plugin provides {architecture!r}; "
            f"install it with: pip install {dist}"
        )
    try:
        model_config = load_model_config(model_data, registry, label=config_path)
    except ConfigError as exc:
        raise FoundryError(f"the checkpoint's config no longer validates with the installed plugin:\n{exc}") from None
    weights = os.path.join(directory, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        raise FoundryError(f"{directory!r} has no {WEIGHTS_FILE}; the checkpoint is incomplete")
    saved, metadata = read_weights_header(weights)
    aliases = {name: target for name, target in metadata.items() if target in saved}  # tied weights, saved once
    saved_elements = sum(tensor.numel for tensor in saved.values())
    from model_foundry.factory import create_model
    from model_foundry.limits import bounded_build

    # Every parameter is saved (tied ones once), so a model with many more parameter elements than the
    # file holds cannot match it: stop building there. Twice the count: a builder may create a weight
    # that it then replaces by a tied one (transformers' LM heads), and each is counted.
    why = (f"{WEIGHTS_FILE} holds {saved_elements:,}, so {CONFIG_FILE} does not describe these weights; "
           "the checkpoint is damaged")
    # Parameters are built on the meta device, uninitialised, and the saved tensors take their place.
    with bounded_build(2 * saved_elements, why, parameters_on_meta=True):
        model = create_model(model_config, registry=registry)
    _check_weights(directory, model, saved, aliases)
    state = _read_state(weights, model, aliases)
    model.load_state_dict(state, strict=True, assign=True)
    if any(tensor.is_meta for tensor in (*model.parameters(), *model.buffers())):
        # A buffer computed from a parameter while the model was built is on the meta device too: this
        # model is built for real and the weights copied in.
        model = create_model(model_config, registry=registry)
        model.load_state_dict(state, strict=True)
    return model


def _read_state(weights: str, model: Any, aliases: Mapping[str, str]) -> dict[str, Any]:
    """The saved tensors by the names of ``model``'s state dict, in its dtypes, read (memory-mapped) from
    ``weights``; tied entries (aliases) are one :class:`~torch.nn.Parameter`, so that assigning them
    keeps the model's weights tied."""
    import torch
    from safetensors import SafetensorError, safe_open

    state: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    try:
        with safe_open(weights, framework="pt") as handle:
            for name, current in model.state_dict(keep_vars=True).items():
                source = aliases.get(name, name)
                if source not in loaded:
                    tensor = handle.get_tensor(source)
                    # Memory-mapped in place where aligned as the allocator aligns (see _header_padding),
                    # else copied: matrix kernels sum in another order on memory aligned otherwise.
                    copy = tensor.data_ptr() % ALIGNMENT != 0
                    tensor = tensor.to(current.dtype, copy=copy)
                    is_parameter = isinstance(current, torch.nn.Parameter)
                    loaded[source] = torch.nn.Parameter(tensor, current.requires_grad) if is_parameter else tensor
                state[name] = loaded[source]
    except (SafetensorError, OSError) as exc:
        raise FoundryError(f"cannot read the weights in {weights!r}: {exc}; the checkpoint is damaged") from None
    return state


def _check_weights(directory: str, model: Any, saved: Mapping[str, SavedTensor], aliases: Mapping[str, str]) -> None:
    """The saved tensors (and their aliases, tied weights) against ``model``'s state dict (on the meta
    device): the same names, shapes, and kinds of dtype (a float weight saved as integers is refused;
    a float16 one is loaded as the model's float32)."""
    expected = model.state_dict()
    declared = {**{name: saved[target] for name, target in aliases.items()}, **saved}
    architecture = model.config.architecture
    missing, unexpected = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
    if missing or unexpected:
        raise FoundryError(
            f"weights in {directory!r} do not match the {architecture} model built from its config "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    for name, tensor in expected.items():
        found = declared[name]
        if tuple(tensor.shape) != found.shape:
            raise FoundryError(
                f"weights in {directory!r} do not match the {architecture} model built from its config: tensor {name!r} "
                f"has shape {list(found.shape)}, the model expects {list(tensor.shape)}"
            )
        kind = _dtype_kind(str(tensor.dtype).removeprefix("torch."))
        if _dtype_kind(found.dtype) != kind:
            raise FoundryError(
                f"weights in {directory!r}: tensor {name!r} is saved as {found.dtype}, the model expects "
                f"{str(tensor.dtype).removeprefix('torch.')}; the checkpoint is damaged"
            )


def _dtype_kind(name: str) -> str:
    """``float``, ``int``, ``bool`` or ``complex`` for a torch dtype name or a safetensors one."""
    name = name.lower()
    if name == "bool":
        return "bool"
    if name.startswith("c"):
        return "complex"
    return "float" if name.startswith(("f", "bf")) else "int"
