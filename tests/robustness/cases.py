"""The bad inputs: generated per category, each a ``Case`` (see harness.py)."""
from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from harness import Case

USER_MODEL = (
    "import torch\n"
    "def build():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))\n"
    "def returns_int():\n    return 3\n"
    "def returns_none():\n    return None\n"
    "def raises():\n    raise RuntimeError('factory failed')\n"
    "def conv_only():\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())\n"
    "not_callable = 5\n"
)
# options that keep a run that turns out valid short (a "bad" input may be a valid one)
QUICK_COMPARE = ["--no-compile", "--repeats", "2", "--n-evaluation", "64", "--n-calibration", "32", "--no-peers", "--batches", "1"]
QUICK_SENSITIVITY = ["--n-evaluation", "64", "--n-calibration", "32", "--top-k", "1", "--controls", "0", "--proxy-samples", "8", "--no-cache"]
QUICK_AUTO = ["--workflows", "dynamic", "--n-evaluation", "64", "--n-calibration", "32", "--proxy-samples", "8"]
QUICK_EVAL = ["--n-evaluation", "64"]
BROKEN_IMPORT = "raise ImportError('this file does not import')\n"
SYNTAX_ERROR = "def build(:\n"


def _files(**files: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for name, content in files.items():
            path = root / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for s in setups:
            s(root)
    return setup


# --- model specs -----------------------------------------------------------------------------------
MODEL_SPECS = ["no-such-model", "", " ", ":", "::", "a:b:c", "x.py:", ":build", "missing.py:build", "model.py:nope",
               "model.py:not_callable", "model.py:returns_int", "model.py:returns_none", "model.py:raises", "broken.py:build",
               "syntax.py:build", "no_such_package_qw.mod:build", "model.txt:build", "../model.py:build", "MNIST-CNN",
               "mnist-cnn ", "dir.py:build", "efficientnet", "smollm2", "nothing.gguf", "/dev/null:build", "\u00e9t\u00e9.py:build",
               "x" * 300]


def model_spec_cases() -> Iterator[Case]:
    setup = _files(**{"model.py": USER_MODEL, "broken.py": BROKEN_IMPORT, "syntax.py": SYNTAX_ERROR, "dir.py__keep": "x"})
    for k, spec in enumerate(MODEL_SPECS):
        yield Case(f"model-quantize-{k}", "model specs", ["quantize", spec, "--out", "{tmp}/o", "--n-evaluation", "64"], setup, may_write=("o",))
        yield Case(f"model-eval-{k}", "model specs", ["eval", spec, *QUICK_EVAL], setup)
    for k, spec in enumerate(MODEL_SPECS[:12]):
        yield Case(f"model-compare-{k}", "model specs", ["compare", spec, *QUICK_COMPARE], setup)
        yield Case(f"model-debug-{k}", "model specs", ["debug", spec, "--recipe", "dynamic", "--samples", "4"], setup)


# --- recipes ---------------------------------------------------------------------------------------
RECIPES = ["", "nope", "static:", "static:observer", "static:observer=", "static:observer=nan", "static:observer=1",
           "static:percentile=nan", "static:percentile=inf", "static:percentile=0", "static:percentile=abc", "static:weight_bits=3",
           "static:weight_bits=8.5", "static:calibration_batches=-1", "static:granularity=per-row", "static:path=onnx",
           "static:backend=gpu", "static:keep_float=", "static:keep_float=no_such_layer", "static:path=pt2e,backend=qnnpack",
           "qat:lr=nan", "qat:lr=-1", "qat:lr=1e999", "qat:steps=2.5", "qat:steps=0", "qat:steps=-5", "qat:batch_size=true",
           "qat:freeze_observers_after=2", "dynamic:linear=yes", "dynamic:linear=1", "dynamic:linear=false,recurrent=false,embedding=false",
           "dynamic:backend=gpu", "dynamic:bogus=1", "bf16:x=1", "int4-rtn", "w8a8", "weight-only:group_size=100",
           "weight-only:bits=3", "dynamic-activation:alpha=2", "static:observer=mse,observer=minmax", "static,observer=mse",
           "static:=", "static:observer=mse,,", "STATIC", "static :observer=mse", "recipe.json", "missing.json", "recipe.yaml"]
RECIPE_FILES: dict[str, bytes] = {
    "nan.json": b'{"kind": "static", "percentile": NaN}',
    "inf.json": b'{"kind": "qat", "lr": Infinity}',
    "list.json": b'[1, 2, 3]',
    "string.json": b'"static"',
    "empty.json": b"",
    "garbage.json": b"\x00\xff\xfe garbage",
    "not_utf8.yaml": b"kind: static\nobserver: \xff\xfe\n",
    "tag.yaml": b"kind: !!python/object/apply:os.system ['echo pwned']\n",
    "tag2.yaml": b"!!python/object/new:os.system [echo pwned]\n",
    "deep.json": b"[" * 100000 + b"]" * 100000,
    "deep.yaml": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "anchors.yaml": b"a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
                    b"d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d]\nkind: static\n",
    "unknown_key.json": b'{"kind": "static", "colour": "blue"}',
    "wrong_type.json": b'{"kind": "static", "weight_bits": "eight"}',
    "version.json": b'{"kind": "static", "version": 99}',
    "no_kind.yaml": b"observer: mse\n",
    "null_kind.json": b'{"kind": null}',
    "nested_keep.json": b'{"kind": "static", "keep_float": [["a"]]}',
    "bool_count.json": b'{"kind": "qat", "steps": true}',
    "huge_int.json": b'{"kind": "qat", "steps": 1' + b"0" * 400 + b"}",
    "txt.txt": b"kind: static\n",
}


def recipe_cases() -> Iterator[Case]:
    setup = _files(**{"recipe.json": '{"kind": "static", "observer": "nope"}', "recipe.yaml": "kind: [static]\n"}, **RECIPE_FILES)
    for k, recipe in enumerate(RECIPES):
        yield Case(f"recipe-{k}", "recipes", ["quantize", "mnist-cnn", "--recipe", recipe, "--out", "{tmp}/o", "--no-eval"], setup, may_write=("o",))
    for name in RECIPE_FILES:
        yield Case(f"recipe-file-{name}", "recipes", ["quantize", "mnist-cnn", "--recipe", name, "--out", "{tmp}/o", "--no-eval"], setup, may_write=("o",))
    for k, recipe in enumerate(RECIPES[:10]):
        yield Case(f"recipe-compare-{k}", "recipes", ["compare", "mnist-cnn", "--recipes", recipe, *QUICK_COMPARE], setup)
        yield Case(f"recipe-sensitivity-{k}", "recipes", ["sensitivity", "mnist-cnn", "--recipe", recipe, *QUICK_SENSITIVITY], setup)


# --- counts and lists ----------------------------------------------------------------------------
COUNT_OPTIONS = {
    "quantize": (["quantize", "mnist-cnn", "--out", "{tmp}/o", "--no-eval"], ["--n-calibration", "--n-evaluation"]),
    "eval": (["eval", "mnist-cnn"], ["--n-evaluation"]),
    "compare": (["compare", "mnist-cnn", "--no-compile", "--no-peers", "--batches", "1", "--recipes", "dynamic"], ["--repeats", "--n-calibration", "--n-evaluation"]),
    "export": (["export", "{tmp}/art", "--to", "onnx"], ["--samples"]),
    "debug": (["debug", "mnist-cnn", "--recipe", "dynamic"], ["--samples", "--batch-size", "--n-calibration"]),
    "sensitivity": (["sensitivity", "mnist-cnn", "--recipe", "dynamic", "--no-cache"], ["--top-k", "--controls", "--proxy-samples", "--workers"]),
    "auto": (["auto", "mnist-cnn", "--workflows", "dynamic", "--n-evaluation", "64"], ["--batch", "--max-float", "--proxy-samples", "--max-drop", "--workers"]),
    "generate": (["generate", "{tmp}/art", "hello"], ["--max-new-tokens"]),
}
BAD_COUNTS = ["0", "-1", "-100", "1e3", "2.5", "nan", "inf", "one", "", "99999999999999999999999"]
BAD_LISTS = ["", "0", "-1", "1,,2", "a", "1;2", "1.5", "99999999999", " , "]


def count_cases() -> Iterator[Case]:
    for command, (base, options) in COUNT_OPTIONS.items():
        for option in options:
            for k, value in enumerate(BAD_COUNTS):
                if option in ("--top-k", "--controls", "--max-float", "--max-drop") and value == "0":
                    continue  # zero is valid there
                yield Case(f"count-{command}{option}-{k}", "counts", [*base, option, value])
    for k, value in enumerate(BAD_COUNTS[:8]):
        yield Case(f"count-threads-{k}", "counts", ["--threads", value, "zoo"])
    # nothing listens on loopback port 1: refused at once, never a remote address
    for k, extra in enumerate([["--ray-address", ""], ["--ray-address", "nohost"], ["--ray-address", "127.0.0.1:1"],
                               ["--ray-address", "127.0.0.1:port"], ["--ray-address", "127.0.0.1:1", "--workers", "1"]]):
        yield Case(f"ray-address-{k}", "counts", ["sensitivity", "mnist-cnn", "--recipe", "dynamic", "--no-cache", *extra])
    for k, value in enumerate(BAD_LISTS):
        yield Case(f"list-batches-{k}", "counts", ["compare", "mnist-cnn", *QUICK_COMPARE[:-2], "--recipes", "dynamic", "--batches", value])
    for k, value in enumerate(["", "gpu", "pytorch,,", "onnxruntime;executorch", "PYTORCH"]):
        yield Case(f"list-target-{k}", "counts", ["compare", "mnist-cnn", *QUICK_COMPARE, "--recipes", "dynamic", "--target", value])


# --- output paths --------------------------------------------------------------------------------
def output_cases() -> Iterator[Case]:
    project = _files(**{"project__notes.txt": "keep", "project__src__main.py": "print(1)"})
    yield Case("out-new", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/deep/new/o", "--no-eval"], may_write=("deep",))
    yield Case("out-existing-dir", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/project", "--no-eval"], project)
    yield Case("out-existing-dir-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/project", "--force", "--no-eval"], project)
    yield Case("out-existing-file", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/f.txt", "--no-eval"], _files(**{"f.txt": "keep"}))
    yield Case("out-existing-file-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/f.txt", "--force", "--no-eval"], _files(**{"f.txt": "keep"}))
    yield Case("out-under-a-file", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/f.txt/o", "--no-eval"], _files(**{"f.txt": "keep"}))
    yield Case("out-proc", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "/proc/quantwise-o", "--no-eval"])
    yield Case("out-root", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "/", "--force", "--no-eval"])
    yield Case("out-home-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}", "--force", "--no-eval"], _files(**{"keep.txt": "keep"}))
    yield Case("out-symlink-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "dynamic", "--out", "{tmp}/link", "--force", "--no-eval"], _symlink_to_project)
    yield Case("out-artifact-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "static-fx", "--out", "{tmp}/art", "--force", "--no-eval"],
               _artifact(), may_change=("art",), may_write=("art",))
    yield Case("out-artifact-plus-file-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "static-fx", "--out", "{tmp}/art", "--force", "--no-eval"],
               _both(_artifact(), _files(**{"art__mine.txt": "keep"})))
    quick = [*QUICK_COMPARE, "--recipes", "dynamic"]
    yield Case("out-artifact-plus-model-py-force", "output paths", ["quantize", "mnist-cnn", "--recipe", "static-fx", "--out", "{tmp}/art", "--force", "--no-eval"],
               _both(_artifact(), _files(**{"art__model.py": "print('user code')"})))
    yield Case("json-to-dir", "output paths", ["compare", "mnist-cnn", "--json", "{tmp}/d", *quick], _files(**{"d__x": "keep"}))
    yield Case("json-under-file", "output paths", ["compare", "mnist-cnn", "--json", "{tmp}/f.txt/r.json", *quick], _files(**{"f.txt": "keep"}))
    yield Case("json-proc", "output paths", ["compare", "mnist-cnn", "--json", "/proc/r.json", *quick])
    yield Case("html-to-dir", "output paths", ["compare", "mnist-cnn", "--html", "{tmp}/d", *quick], _files(**{"d__x": "keep"}))
    yield Case("export-wrong-suffix", "output paths", ["export", "{tmp}/art", "--to", "onnx", "--out", "{tmp}/m.pt2"], _artifact())
    yield Case("export-existing", "output paths", ["export", "{tmp}/art", "--to", "onnx", "--out", "{tmp}/m.onnx"], _both(_artifact(), _files(**{"m.onnx": "keep"})))
    yield Case("export-under-file", "output paths", ["export", "{tmp}/art", "--to", "onnx", "--out", "{tmp}/f.txt/m.onnx"], _both(_artifact(), _files(**{"f.txt": "keep"})))
    yield Case("export-unknown-target", "output paths", ["export", "{tmp}/art", "--to", "tflite"], _artifact())
    yield Case("export-to-dir", "output paths", ["export", "{tmp}/art", "--to", "onnx", "--out", "{tmp}/d.onnx"], _both(_artifact(), _files(**{"d.onnx__x": "keep"})))
    yield Case("export-not-artifact", "output paths", ["export", "{tmp}/project", "--to", "onnx"], project)
    yield Case("auto-out-existing", "output paths", ["auto", "mnist-cnn", "--out", "{tmp}/project", *QUICK_AUTO], project)
    yield Case("auto-recipe-out-suffix", "output paths", ["auto", "mnist-cnn", "--recipe-out", "{tmp}/r.txt", *QUICK_AUTO])


def _symlink_to_project(root: Path) -> None:
    (root / "project").mkdir()
    (root / "project" / "keep.txt").write_text("keep")
    (root / "link").symlink_to(root / "project")


# --- data files and folders ----------------------------------------------------------------------
def _pt(obj_code: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        import torch

        namespace = {"torch": torch}
        exec(obj_code, namespace)  # noqa: S102  (test data built from a literal in this file)
        torch.save(namespace["obj"], root / "data.pt")
    return setup


class _Evil:
    def __reduce__(self):  # what a hostile pickle does on load
        return (print, ("pwned",))


def _npz(**arrays: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        import numpy as np

        np.savez(root / "data.npz", **{k: eval(v, {"np": np}) for k, v in arrays.items()})  # noqa: S307  (literals in this file)
    return setup


def _safetensors_header(header: bytes, length: int | None = None) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / "data.safetensors").write_bytes(struct.pack("<Q", len(header) if length is None else length) + header)
    return setup


DATA = {
    "pt-garbage": (_files(**{"data.pt": b"\x00\x01garbage"}), "data.pt"),
    "pt-empty": (_files(**{"data.pt": b""}), "data.pt"),
    "pt-pickle-evil": (lambda root: (root / "data.pt").write_bytes(__import__("pickle").dumps({"inputs": _Evil()})), "data.pt"),
    "pt-wrong-shape": (_pt("obj = {'inputs': torch.randn(20, 3, 3)}"), "data.pt"),
    "pt-zero-samples": (_pt("obj = {'inputs': torch.randn(0, 1, 4, 4)}"), "data.pt"),
    "pt-three-samples": (_pt("obj = {'inputs': torch.randn(3, 1, 4, 4)}"), "data.pt"),
    "pt-complex": (_pt("obj = {'inputs': torch.randn(20, 16, dtype=torch.complex64)}"), "data.pt"),
    "pt-int": (_pt("obj = {'inputs': torch.randint(0, 5, (20, 16))}"), "data.pt"),
    "pt-string-key-only": (_pt("obj = {'weights': torch.randn(20, 16)}"), "data.pt"),
    "pt-list": (_pt("obj = [torch.randn(20, 16)]"), "data.pt"),
    "pt-targets-mismatch": (_pt("obj = {'inputs': torch.randn(20, 16), 'targets': torch.zeros(7, dtype=torch.long)}"), "data.pt"),
    "pt-scalar": (_pt("obj = torch.tensor(1.0)"), "data.pt"),
    "pt-nan": (_pt("obj = {'inputs': torch.full((20, 16), float('nan'))}"), "data.pt"),
    "npz-object": (_npz(inputs="np.array([object(), 1], dtype=object)"), "data.npz"),
    "npz-empty": (_npz(), "data.npz"),
    "npz-wrong-shape": (_npz(inputs="np.zeros((10, 5), np.float32)"), "data.npz"),
    "npz-garbage": (_files(**{"data.npz": b"PK\x03\x04garbage"}), "data.npz"),
    "st-garbage": (_files(**{"data.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"}), "data.safetensors"),
    "st-huge-header": (_safetensors_header(b"{}", 1 << 62), "data.safetensors"),
    "st-bad-offsets": (_safetensors_header(b'{"inputs": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4]}}'), "data.safetensors"),
    "st-empty": (_files(**{"data.safetensors": b""}), "data.safetensors"),
    "folder-empty": (_files(**{"imgs__.keep": b""}), "imgs"),
    "folder-not-images": (_files(**{"imgs__a.txt": b"hello", "imgs__b.bin": b"\x00"}), "imgs"),
    "folder-corrupt-images": (_files(**{"imgs__a.png": b"\x89PNG garbage", "imgs__b.jpg": b"\xff\xd8garbage"}), "imgs"),
    "missing-file": (None, "missing.pt"),
    "unknown-suffix": (_files(**{"data.csv": "1,2,3"}), "data.csv"),
    "factory-missing": (None, "nodata.py:make"),
    "dev-null": (None, "/dev/null"),
}


def data_cases() -> Iterator[Case]:
    model = _files(**{"model.py": USER_MODEL})
    for name, (setup, spec) in DATA.items():
        both = _both(model, setup) if setup else model
        yield Case(f"data-{name}", "data", ["quantize", "model.py:build", "--data", spec, "--recipe", "dynamic", "--out", "{tmp}/o"], both, may_write=("o",))
        yield Case(f"data-zoo-{name}", "data", ["eval", "mnist-cnn", "--data", spec], both)
    yield Case("data-conv-only-dynamic", "data", ["quantize", "model.py:conv_only", "--data", "data.pt", "--recipe", "dynamic", "--out", "{tmp}/o"],
               _both(model, _pt("obj = {'inputs': torch.randn(20, 1, 4, 4)}")))


# --- mutated artifacts ---------------------------------------------------------------------------
_TEMPLATE: dict[str, Path] = {}


def template_artifact() -> Path:
    """An mnist-cnn dynamic artifact, made once per process (through the library)."""
    if "art" not in _TEMPLATE:
        from quantwise import api

        folder = Path(tempfile.mkdtemp(prefix="quantwise-robustness-"))
        bundle = api.load_model("mnist-cnn", n_calibration=64, n_evaluation=64)
        _TEMPLATE["art"] = api.save(api.quantize(bundle, "dynamic"), folder / "art")
    return _TEMPLATE["art"]


def _artifact(mutate: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        shutil.copytree(template_artifact(), root / "art")
        if mutate is not None:
            mutate(root / "art")
    return setup


def _manifest(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def mutate(art: Path) -> None:
        manifest = json.loads((art / "manifest.json").read_text())
        change(manifest)
        (art / "manifest.json").write_text(json.dumps(manifest))
    return mutate


def _set(*keys: str, value: object) -> Callable[[dict], None]:
    def change(m: dict) -> None:
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value
    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda m: m.pop(key, None)


MANIFEST_FIELDS = ["format", "format_version", "model", "recipe", "inputs", "meta", "metrics", "versions", "notes", "architecture"]
ODD_VALUES = [None, 0, -1, 1e308, "x", [], {}, [1, 2], True, "\u0000", {"a": {"b": {"c": []}}}]


def _weights(content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(art: Path) -> None:
        path = art / "model.safetensors"
        path.write_bytes(content(path.read_bytes()))
    return mutate


def artifact_mutations() -> dict[str, Callable[[Path], None]]:
    out: dict[str, Callable[[Path], None]] = {}
    for field in MANIFEST_FIELDS:
        out[f"drop-{field}"] = _manifest(_drop(field))
        for k, value in enumerate(ODD_VALUES):
            out[f"{field}-odd{k}"] = _manifest(_set(field, value=value))
    out.update({
        "model-payload": _manifest(_set("model", value="payload.py:f")),
        "model-module": _manifest(_set("model", value="os:getcwd")),
        "recipe-kind": _manifest(_set("recipe", "kind", value="static")),
        "recipe-bad-field": _manifest(_set("recipe", "linear", value="yes")),
        "inputs-huge": _manifest(_set("inputs", value=[{"shape": [100000, 100000, 100000], "dtype": "float32"}])),
        "inputs-negative": _manifest(_set("inputs", value=[{"shape": [-1, 784], "dtype": "float32"}])),
        "inputs-dtype": _manifest(_set("inputs", value=[{"shape": [1, 1, 28, 28], "dtype": "Tensor"}])),
        "inputs-wrong-shape": _manifest(_set("inputs", value=[{"shape": [1, 3, 5, 5], "dtype": "float32"}])),
        "versions-torch": _manifest(_set("versions", "torch", value="1.0.0")),
        "versions-torchao": _manifest(_set("versions", "torchao", value="0.0.1")),
        "architecture-digest": _manifest(_set("architecture", "digest", value="0" * 16)),
        "manifest-not-json": lambda art: (art / "manifest.json").write_text("{not json"),
        "manifest-empty": lambda art: (art / "manifest.json").write_text(""),
        "manifest-binary": lambda art: (art / "manifest.json").write_bytes(b"\xff\xfe\x00"),
        "manifest-deep": lambda art: (art / "manifest.json").write_text("[" * 100000 + "]" * 100000),
        "manifest-missing": lambda art: (art / "manifest.json").unlink(),
        "manifest-is-dir": lambda art: ((art / "manifest.json").unlink(), (art / "manifest.json").mkdir()),
        "manifest-symlink": lambda art: ((art / "manifest.json").unlink(), (art / "manifest.json").symlink_to("/etc/hostname")),
        "weights-missing": lambda art: (art / "model.safetensors").unlink(),
        "weights-truncated": _weights(lambda b: b[: len(b) // 2]),
        "weights-header-only": _weights(lambda b: b[: 8 + struct.unpack("<Q", b[:8])[0]]),
        "weights-empty": _weights(lambda b: b""),
        "weights-huge-header": _weights(lambda b: struct.pack("<Q", 1 << 62) + b[8:]),
        "weights-garbage-header": _weights(lambda b: b[:8] + b"\xff" * (len(b) - 8)),
        "weights-flipped-bytes": _weights(lambda b: b[:-100] + bytes(x ^ 0xFF for x in b[-100:])),
        "weights-renamed-tensor": _weights(lambda b: b.replace(b"weight", b"wEight", 1)),
        "weights-shape-lie": _weights(lambda b: b.replace(b"[128,3136]", b"[128,3137]", 1).replace(b"[128, 3136]", b"[128, 3137]", 1)),
    })
    return out


def artifact_cases() -> Iterator[Case]:
    payload = _files(**{"payload.py": "open('payload-ran', 'w').write('ran')\ndef f():\n    return None\n"})
    for name, mutate in artifact_mutations().items():
        setup = _both(payload, _artifact(mutate))
        yield Case(f"artifact-eval-{name}", "artifacts", ["eval", "{tmp}/art", *QUICK_EVAL], setup)
        yield Case(f"artifact-export-{name}", "artifacts", ["export", "{tmp}/art", "--to", "onnx", "--samples", "16"], setup,
                   may_write=("art/model.onnx", "art/manifest.json"), may_change=("art/manifest.json",))


# --- language models (slow: they load smollm2-135m) ---------------------------------------------
def language_model_cases() -> Iterator[Case]:
    texts = {"empty.txt": b"", "binary.txt": b"\x00\xff" * 100, "tiny.txt": b"hello", "dir__a.txt": b"", "latin1.txt": "caf\u00e9 ".encode("latin-1") * 10}
    setup = _files(**texts)
    for name in ["missing.txt", "empty.txt", "binary.txt", "tiny.txt", "dir", "latin1.txt"]:
        yield Case(f"lm-text-{name}", "language models", ["eval", "smollm2-135m", "--text", name, "--eval-tokens", "512"], setup, slow=True)
    for value in ["0", "8", "-512", "100000000"]:
        yield Case(f"lm-context-{value}", "language models", ["eval", "smollm2-135m", "--context", value, "--eval-tokens", "512"], slow=True)
    for recipe in ["static-fx", "weight-only:group_size=100", "weight-only:bits=4,group_size=128", "dynamic"]:
        yield Case(f"lm-recipe-{recipe}", "language models", ["quantize", "smollm2-135m", "--recipe", recipe, "--out", "{tmp}/o"], slow=True)
    for recipe in ["gguf:type=Q3_K", "gguf:algorithm=magic", "gguf:damp=2", "gguf:type=5", "gguf:calibration_samples=0"]:
        yield Case(f"lm-recipe-{recipe}", "language models", ["quantize", "smollm2-135m", "--recipe", recipe, "--out", "{tmp}/o"])
    yield Case("gguf-export-not-lm", "language models", ["export", "{tmp}/art", "--to", "gguf"], _artifact())
    yield Case("gguf-recipe-not-lm", "language models", ["quantize", "mnist-cnn", "--recipe", "gguf-q4_0", "--out", "{tmp}/o"])
    yield Case("lm-generate-not-lm", "language models", ["generate", "{tmp}/art", "hi"], _artifact(), slow=True)
    yield Case("lm-generate-missing", "language models", ["generate", "{tmp}/nothing", "hi"], slow=True)


def all_cases() -> list[Case]:
    cases = [*model_spec_cases(), *recipe_cases(), *count_cases(), *output_cases(), *data_cases(), *artifact_cases(), *language_model_cases()]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases
