"""Hugging Face hub downloads and the cache of converted Keras weights.

Downloads go through ``huggingface_hub.hf_hub_download`` (its cache layout,
resume and offline mode). Two things are added on top:

* **Fail fast without network.** ``hf_hub_download`` retries a refused
  connection five times with backoff (23.6 s measured here). A file that is
  already cached is returned without any request; otherwise one metadata
  request without retries (``HF_HUB_ETAG_TIMEOUT`` seconds, default 10) decides
  whether to download, and a failure says how to fetch the file elsewhere.
* **Environment read at call time.** ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and
  ``HF_ENDPOINT`` are honoured when set after ``huggingface_hub`` was imported.

Converted weights (PyTorch layout -> Keras) are cached as ``.weights.h5`` files
keyed by the SHA-256 of the source file and the model's weight layout, so a
second load does not convert again.
"""

import hashlib
import os

DEFAULT_FILENAME = "model.safetensors"
_TRUE = ("1", "on", "yes", "true")


def _env_true(name):
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_mode():
    """Whether ``HF_HUB_OFFLINE`` is set now or was when huggingface_hub was imported.

    (huggingface_hub reads it once, at import; its HTTP session then refuses
    every request.)
    """
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir():
    """The hub cache in use: ``$HF_HUB_CACHE`` now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _fetch_instructions(repo_id, filename, revision, endpoint):
    url = f"{endpoint.rstrip('/')}/{repo_id}/resolve/{revision or 'main'}/{filename}"
    return (
        "To use these weights without network: (a) on a machine with network run "
        f"`hf download {repo_id} {filename} --local-dir DIR` (or fetch {url}), copy "
        f"the file here and pass weights='DIR/{filename}'; or (b) copy a Hugging "
        "Face hub cache that holds it and set HF_HUB_CACHE=<that directory> and "
        "HF_HUB_OFFLINE=1. See docs/weights.md.")


def download(repo_id, filename=DEFAULT_FILENAME, *, revision=None, cache_dir=None,
             timeout=None):
    """Returns the local path of a hub file, downloading it if needed.

    Args:
        repo_id: hub repository, e.g. ``"timm/resnext50_32x4d.tv2_in1k"``.
        filename: file in the repository.
        revision: branch, tag or commit (default ``"main"``).
        cache_dir: hub cache directory (default ``hub_cache_dir()``).
        timeout: seconds for the metadata request (default
            ``HF_HUB_ETAG_TIMEOUT``, 10).

    Returns:
        Path of the file inside the hub cache.

    Raises:
        FileNotFoundError: not cached and the hub is unreachable (or
            ``HF_HUB_OFFLINE=1``); the message says how to fetch it elsewhere.
        ValueError: the hub answered that the repository or file does not exist.
    """
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub import errors

    cache_dir = cache_dir or hub_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    timeout = constants.HF_HUB_ETAG_TIMEOUT if timeout is None else timeout
    common = dict(repo_id=repo_id, filename=filename, revision=revision,
                  cache_dir=cache_dir, endpoint=endpoint)
    where = f"{filename!r} of hub repository {repo_id!r}"
    try:
        return huggingface_hub.hf_hub_download(**common, local_files_only=True)
    except errors.LocalEntryNotFoundError:
        pass
    if offline_mode():
        raise FileNotFoundError(
            f"HF_HUB_OFFLINE is set and {where} is not in the hub cache "
            f"{cache_dir!r}. " + _fetch_instructions(repo_id, filename, revision, endpoint))
    url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision,
                                     endpoint=endpoint)
    try:
        # One request, no retries: decides quickly whether the hub is reachable.
        huggingface_hub.get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint)
        return huggingface_hub.hf_hub_download(**common, etag_timeout=timeout)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError,
            errors.RemoteEntryNotFoundError) as e:
        raise ValueError(f"The hub has no {where} (revision {revision or 'main'!r}): "
                         f"{type(e).__name__}") from e
    except Exception as e:  # network errors come from httpx, OSError, hub errors
        raise FileNotFoundError(
            f"Cannot download {where} from {endpoint} within {timeout} s "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "No network? " + _fetch_instructions(repo_id, filename, revision, endpoint)
        ) from e


def converted_cache_dir():
    """Where converted weights go: ``$KERAS_RESNEXT_CACHE`` or ``~/.cache/keras_resnext``."""
    return os.environ.get("KERAS_RESNEXT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "keras_resnext")


def file_sha256(path, chunk_size=1 << 22):
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def layout_signature(model):
    """A short hash of ``model``'s weight paths and shapes (its weights layout)."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(f"{variable.path}:{tuple(variable.shape)};".encode())
    return digest.hexdigest()[:10]


def writer_versions():
    """``kr<keras_resnext version>-k<Keras version>``: what wrote a converted file.

    Part of the cache name: after an upgrade of either (a conversion fix, a change
    in Keras' weights format) the weights are converted again, instead of read
    from a file that the new code might read differently, or only in part (Keras
    loads a file missing some groups with a warning, the rest left initialized).
    """
    import keras

    from keras_resnext import __version__

    return f"kr{__version__}-k{keras.__version__}"


def converted_cache_path(model, source_path, *, cache_dir=None, label="model"):
    """The ``.weights.h5`` path holding ``source_path`` converted for ``model``."""
    cache_dir = cache_dir or converted_cache_dir()
    name = (f"{label}-{file_sha256(source_path)[:16]}-{layout_signature(model)}-"
            f"{writer_versions()}.weights.h5")
    return os.path.join(cache_dir, name)


