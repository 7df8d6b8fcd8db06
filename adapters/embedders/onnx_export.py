"""Export a sentence-transformers model to ONNX (fp32 or int8), once, into an on-disk cache.

Everything runs locally from the model's own weights; nothing is fetched from a hub.

1. torch traces the whole sentence-transformers pipeline (transformer, pooling,
   normalisation) into one graph, so the runtime needs no torch and no pooling code.
   Attention is loaded as ``eager`` so that step 2 recognises its pattern.
2. ONNX Runtime's transformer optimizer fuses embeddings, attention, GELU and the
   skip-layer-norms (a failed fusion keeps the plain graph).
3. For ``int8``, ONNX Runtime's dynamic quantizer stores MatMul/Attention weights as
   per-channel int8; activations are quantized per batch at run time. Per-tensor
   weights cost far more quality on this model (mean cosine to fp32 0.950 vs 0.991).
4. A self-check embeds probe sentences with sentence-transformers and with the new graph
   and refuses an export whose cosine falls below :data:`MIN_PROBE_COSINE`.

Not sentence-transformers' own ``backend="onnx"``: it needs ``optimum-onnx``, which pins
``transformers<4.58`` while sentence-transformers 5+ needs ``transformers>=5``.

A cache entry is a directory ``<cache_dir>/<model>-<variant>-<digest>/`` holding
``model.onnx``, ``tokenizer.json`` (truncating at the model's ``max_seq_length``) and
``meta.json``. The digest covers the model's files (name, size, mtime), the variant and
:data:`FORMAT`, so a reinstalled model or a new recipe gets a new entry. Entries are
built in a temporary sibling directory and renamed into place: another process never
sees half an entry, and the loser of a race throws its copy away. :class:`OnnxSession`
loads an entry, for the embedder and for the self-check.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from memos.errors import ConfigError, DependencyMissing

log = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

#: version of the export recipe; bump it when a change alters the vectors an entry yields
FORMAT = 1
#: counts the exports this process ran (tests check that a warm cache runs none)
EXPORTS = 0
#: lowest cosine to the sentence-transformers embedding a fresh export may show on the probes
#: (it catches a broken export; int8's worst case is a one-word text such as "ok", at ~0.94-0.96)
MIN_PROBE_COSINE: dict[str, float] = {"fp32": 0.9999, "int8": 0.90}
EXTRA_HINT = (
    "pip install onnxruntime onnx (dependencies of memcube-os; set embedder_backend='torch' to do without)"
)

_PROBES = (
    "Hi Caroline, how was the support group yesterday?",
    "I went to the LGBTQ support group and it was really powerful.",
    "  leading and trailing spaces  ",
    "Numbers like 2023-05-08, 7:55 pm and $1,299.99 appear in chats too.",
    "Ünïcödé, emoji 🙂 and 中文 mixed in.",
    "ok",
    "",
    "A much longer memory that keeps going " * 40,
)


@functools.cache
def is_onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


@functools.cache
def is_onnx_export_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "torch"))


def default_cache_dir() -> Path:
    """Where exports live when no cache directory is given: shared by every home of this user."""
    return Path.home() / ".cache" / "memos" / "embedders"


def entry_dir(model_name: str, model_path: str, precision: Precision, cache_dir: Path) -> Path:
    """The cache directory for this model and variant (cheap: stats files, imports nothing heavy)."""
    slug = "".join(
        c if c.isalnum() or c in "-_." else "_" for c in model_name.removeprefix("sentence-transformers/")
    )
    root = Path(model_path)
    where = str(root.resolve()) if root.is_dir() else model_path
    h = hashlib.sha256(f"{FORMAT}|{precision}|{where}".encode())
    if root.is_dir():
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"|{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir / f"{slug}-{precision}-{h.hexdigest()[:16]}"


def read_meta(entry: Path) -> dict[str, Any] | None:
    """The entry's ``meta.json`` if the entry is complete, else None."""
    try:
        meta: dict[str, Any] = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or not (entry / meta["model_file"]).is_file():
        return None
    return meta


def ensure_exported(model_name: str, model_path: str, precision: Precision, cache_dir: Path) -> Path:
    """Return the cache entry for the model and variant, exporting it first if there is none."""
    entry = entry_dir(model_name, model_path, precision, cache_dir)
    if read_meta(entry) is not None:
        return entry
    if not is_onnx_export_available():
        raise DependencyMissing(
            f"exporting {model_name} to ONNX needs torch, onnx and onnxruntime: {EXTRA_HINT}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "exporting %s to ONNX (%s) into %s; this runs once, about 20 s", model_name, precision, cache_dir
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        started = time.perf_counter()
        _export(model_name, model_path, precision, tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            if read_meta(entry) is None:  # not a lost race: something else is in the way
                raise
            log.info("another process exported %s first; using its copy", entry.name)
        else:
            log.info(
                "exported %s (%s) to %s in %.1fs", model_name, precision, entry, time.perf_counter() - started
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _export(model_name: str, model_path: str, precision: Precision, out: Path) -> None:
    global EXPORTS
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    from memos.adapters.embedders.sentence_transformers import quiet_transformers

    EXPORTS += 1
    quiet_transformers()
    try:
        # Any: the modules and configs reached below are typed loosely upstream
        st: Any = SentenceTransformer(model_path, device="cpu", model_kwargs={"attn_implementation": "eager"})
    except OSError as exc:
        raise ConfigError(
            f"cannot load embedder {model_name!r} from {model_path!r} to export it: {exc}"
        ) from exc
    st.eval()
    hf_tokenizer = st.tokenizer
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"{model_name} has no fast (tokenizers) tokenizer; the ONNX embedder needs one")
    sample = hf_tokenizer(list(_PROBES[:2]), padding=True, return_tensors="pt")
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *tensors: Any) -> Any:
            return self.st(dict(zip(input_names, tensors, strict=True)))["sentence_embedding"]

    fp32 = out / "model_fp32.onnx"
    axes = {n: {0: "batch", 1: "sequence"} for n in input_names} | {"sentence_embedding": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter about a graph we verify below
        torch.onnx.export(
            Pipeline().eval(),
            tuple(sample[n] for n in input_names),
            str(fp32),
            input_names=input_names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,  # the TorchScript tracer keeps dynamic batch/sequence axes without onnxscript
        )
    config = st[0].auto_model.config
    graph = _fuse(fp32, out / "model_fused.onnx", int(config.num_attention_heads), int(config.hidden_size))
    if precision == "int8":
        graph = _quantize(graph, out / "model_int8.onnx")
    final = out / "model.onnx"
    os.replace(graph, final)
    for leftover in out.glob("model_*.onnx*"):
        leftover.unlink()

    backend = type(backend).from_str(backend.to_str())  # a copy: the live tokenizer stays untouched
    backend.enable_truncation(max_length=int(st.max_seq_length))
    backend.no_padding()
    backend.save(str(out / "tokenizer.json"))

    dim_getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = int(dim_getter() or 0)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model": model_name,
        "precision": precision,
        "model_file": final.name,
        "inputs": input_names,
        "dim": dim,
        "max_seq_length": int(st.max_seq_length),
        "pad_id": int(hf_tokenizer.pad_token_id or 0),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "sentence_transformers": _version("sentence-transformers"),
        },
    }
    meta["probe_min_cosine"] = _self_check(st, out, meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _fuse(src: Path, dst: Path, num_heads: int, hidden_size: int) -> Path:
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = optimize_model(
                str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1
            )
            fused.save_model_to_file(str(dst))
    except Exception as exc:  # the fusions are an optimisation; an unknown architecture runs unfused
        log.warning("ONNX Runtime could not fuse the graph (%s); using the plain export", exc)
        return src
    return dst


def _quantize(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), _root_log_filter(_drop_preprocess_hint):
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused contrib ops (Attention, SkipLayerNorm) have no shape inference; their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def _drop_preprocess_hint(record: logging.LogRecord) -> bool:
    # The quantizer logs to the root logger, asking for a shape-inference pass that
    # the fused contrib ops do not support; DefaultTensorType covers what it would add.
    return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _root_log_filter(keep: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


class OnnxSession:
    """One loaded cache entry: tokenizer plus ONNX Runtime session, safe to share between threads."""

    def __init__(self, entry: Path, meta: dict[str, Any], threads: int | None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise DependencyMissing(
                f"the ONNX embedder needs onnxruntime and tokenizers: {EXTRA_HINT}"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: the same speed on an idle machine, faster when
        # other work (the store, the index, other processes) shares the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # ONNX Runtime prints warnings straight to stderr; keep errors only
        self.session = ort.InferenceSession(
            str(entry / meta["model_file"]), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(entry / "tokenizer.json"))
        self.inputs: list[str] = [i.name for i in self.session.get_inputs()]
        self.dim = int(meta["dim"])
        self.pad_id = int(meta.get("pad_id", 0))

    def embed(self, texts: Sequence[str], batch_size: int) -> Any:
        """Unit-norm float32 array of shape (len(texts), dim), in the order given."""
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        # Batches of similar length waste little on padding: 1.4-1.6x on mixed chat turns.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(encodings), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            types = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                enc = encodings[i]
                n = len(enc.ids)
                ids[r, :n] = enc.ids
                mask[r, :n] = 1
                types[r, :n] = enc.type_ids
            arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[rows] = self.session.run(None, {name: arrays[name] for name in self.inputs})[0]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out


def _self_check(st: Any, out: Path, meta: dict[str, Any]) -> float:
    import numpy as np

    reference = st.encode(
        list(_PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    session = OnnxSession(out, meta, threads=None)
    got = np.asarray(session.embed(list(_PROBES), batch_size=3))
    cosine = float((got * reference).sum(axis=1).min())
    bound = MIN_PROBE_COSINE[meta["precision"]]
    if cosine < bound:
        raise ConfigError(
            f"the {meta['precision']} ONNX export of {meta['model']} disagrees with sentence-transformers "
            f"(min cosine {cosine:.4f} < {bound}); use the sentence_transformers embedder for this model"
        )
    return round(cosine, 6)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
