"""Other libraries' warnings are counted, not shown; quantwise's own lines pass; --debug shows all."""
import logging
import warnings

from quantwise.cli.noise import Capture
from tests.helpers import invoke


def test_other_libraries_are_counted_and_quantwise_lines_pass(capsys):
    root = logging.getLogger()
    shown: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            shown.append(record.getMessage())

    keep = Keep()
    root.addHandler(keep)
    capture = Capture()
    try:
        capture.install()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = capture._warning  # catch_warnings restored the original on entry
            warnings.warn_explicit("old API", DeprecationWarning, "/v/lib/python3.11/site-packages/torchao/quantization/x.py", 7)
        logging.getLogger("torch.utils._pytree").warning("Enum subclass registered")  # torch's own loggers reach the root
        logging.getLogger("onnxruntime.quantization").warning("Quantization parameters for tensor x not specified")
        logging.getLogger("quantwise.compare").warning("static-fx: slower than float")
    finally:
        capture.uninstall()
        root.removeHandler(keep)
    assert shown == ["static-fx: slower than float"]
    assert dict(capture.sources) == {"torchao": 1, "torch": 1, "onnxruntime": 1}
    assert capture.summary() == "3 warnings from other libraries not shown (torchao 1, torch 1, onnxruntime 1); --debug shows them"
    assert Capture().summary() is None


def test_a_command_ends_with_one_summary_line_and_debug_shows_all(capsys, monkeypatch):
    import transformers.utils.logging  # noqa: F401  (as after any language-model test: its logger has its own handler)

    from quantwise.cli import main

    real, calls = main.out, []

    class Noisy:  # stands for a library that warns while the command runs
        def print(self, *args, **kwargs):
            logging.getLogger("transformers.modeling_utils").warning("some weights were not used")
            calls.append(1)
            real.print(*args, **kwargs)

    monkeypatch.setattr(main, "out", Noisy())
    code, out, err = invoke(capsys, "zoo")
    assert code == 0 and "smollm2-135m" in out
    count = len(calls)
    assert "some weights were not used" not in err
    assert f"{count} warnings from other libraries not shown (transformers {count}); --debug shows them" in err.replace("\n", "")
    code, out, err = invoke(capsys, "--debug", "zoo")
    assert code == 0 and "some weights were not used" in err and "not shown" not in err
