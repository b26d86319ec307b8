"""Run a GGUF file in llama.cpp (through llama-cpp-python, an optional extra): perplexity over
token windows and greedy tokens, scored exactly as :mod:`quantwise.llm.perplexity` scores PyTorch.

Token ids are fed directly (llama.cpp's tokenizer is not used), every window from an empty KV
cache with logits for every position; the score is the sum over t = 1..ctx-1 of
``-log p(row[t] | row[:t])`` (log-softmax in float64) over all windows, ``exp(total / count)``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import torch

from quantwise.errors import QuantwiseError, first_line

__all__ = ["available", "LlamaCppLM", "run_isolated"]


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs to the process's stderr from C; keep it off the terminal."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    x = logits.astype(np.float64, copy=False)
    peak = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - peak).sum(axis=1)) + peak[:, 0]
    return float((lse - x[np.arange(len(targets)), targets]).sum())


class LlamaCppLM:
    """A GGUF file loaded by llama.cpp with room for ``context`` tokens."""

    def __init__(self, path: Path, context: int, threads: int = 2) -> None:
        try:
            import llama_cpp
        except Exception as err:  # not installed, or a broken native library
            raise QuantwiseError(f"llama-cpp-python cannot be imported ({type(err).__name__}: {first_line(err)})",
                                 "install it: pip install 'quantwise[llamacpp]'") from None
        try:
            with _quiet_stderr():
                self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=context, n_batch=context, n_ubatch=context, n_threads=threads,
                                           n_threads_batch=threads, logits_all=True, verbose=False)
        except Exception as err:
            raise QuantwiseError(f"llama.cpp cannot load {path.name} ({type(err).__name__}: {first_line(err)})",
                                 "report the model and recipe; the file is not kept") from None
        self.version = getattr(llama_cpp, "__version__", "?")

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> "LlamaCppLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def nll(self, row: list[int]) -> tuple[float, np.ndarray]:
        """Summed NLL of ``row[1:]`` and the argmax prediction at each scored position."""
        self.llm.reset()
        self.llm.eval(row)
        logits = np.asarray(self.llm.scores[: len(row) - 1])
        return _nll(logits, np.asarray(row[1:], dtype=np.int64)), logits.argmax(-1)

    def perplexity(self, ids: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Perplexity over the windows ``ids`` [n, context] and the argmax predictions (flattened)."""
        total, count, top = 0.0, 0, []
        for row in ids.tolist():
            nll, argmax = self.nll(row)
            total, count = total + nll, count + len(row) - 1
            top.append(torch.from_numpy(argmax.astype(np.int64)))
        return math.exp(total / count), torch.cat(top)

    def speed(self, prefill: list[int], prompt: list[int], new_tokens: int, repeats: int) -> dict[str, float]:
        """Prefill (one forward over ``prefill``, logits at every position, as PyTorch's prefill
        computes them) and greedy decode (``new_tokens`` after ``prompt``, one token per call)
        tokens per second, medians over ``repeats`` after one untimed round."""
        import statistics
        import time

        pre, dec = [], []
        for r in range(repeats + 1):
            self.llm.reset()
            start = time.perf_counter()
            self.llm.eval(prefill)
            seconds = time.perf_counter() - start
            decode: list[float] = []
            self.greedy(prompt, new_tokens, decode)
            if r:  # round 0 warms up
                pre.append(len(prefill) / seconds)
                dec.append((new_tokens - 1) / decode[0])
        return {"prefill_tok_s": statistics.median(pre), "decode_tok_s": statistics.median(dec)}

    def greedy(self, prompt: list[int], new_tokens: int, seconds: list[float] | None = None) -> list[int]:
        """``new_tokens`` greedy tokens after ``prompt``; ``seconds`` gets the time of the one-token steps."""
        import time

        self.llm.reset()
        self.llm.eval(prompt)
        tokens = [int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))]
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([tokens[-1]])
            tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
        if seconds is not None:
            seconds.append(time.perf_counter() - start)
        return tokens


def run_isolated(path: Path, ids: torch.Tensor, prompt: list[int], new_tokens: int, threads: int, workdir: Path,
                 speed: tuple[list[int], int] | None = None) -> dict:
    """Perplexity, argmax predictions and greedy tokens of ``path`` in llama.cpp (with ``speed`` =
    (prefill ids, repeats): also :meth:`LlamaCppLM.speed`), run in a child process: a llama.cpp
    build that crashes on the file (a native fault kills its process) then becomes one readable
    error here, and the caller can still clean up."""
    import json
    import subprocess
    import sys

    request = workdir / "llamacpp-request.json"
    request.write_text(json.dumps({"path": str(path), "ids": ids.tolist(), "prompt": prompt, "new_tokens": new_tokens, "threads": threads,
                                   "speed": None if speed is None else {"prefill": speed[0], "repeats": speed[1]}}))
    done = subprocess.run([sys.executable, "-m", "quantwise.gguf.llamacpp", str(request)], capture_output=True, text=True)
    request.unlink(missing_ok=True)
    if done.returncode != 0:
        last = (done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["no output"])[-1]
        how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"failed ({last[:160]})"
        raise QuantwiseError(f"llama.cpp {how} while running {path.name}; this llama.cpp build cannot run the file",
                             "rebuild llama-cpp-python (scripts/setup.sh builds it with AMX off) or uninstall it to skip the llama.cpp check")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(request_path: str) -> None:
    import json

    request = json.loads(Path(request_path).read_text())
    ids = torch.tensor(request["ids"], dtype=torch.long)
    speed = request.get("speed")
    context = max(ids.shape[1], len(request["prompt"]) + request["new_tokens"], len(speed["prefill"]) if speed else 0)
    try:
        with _quiet_stderr(), LlamaCppLM(Path(request["path"]), context, request["threads"]) as llm:
            ppl, top = llm.perplexity(ids)
            tokens = llm.greedy(request["prompt"], request["new_tokens"])
            timed = llm.speed(speed["prefill"], request["prompt"], request["new_tokens"], speed["repeats"]) if speed else {}
    except QuantwiseError as err:
        print(str(err))
        raise SystemExit(2) from None
    print(json.dumps({"perplexity": ppl, "argmax": top.tolist(), "tokens": tokens, "version": llm.version, **timed}))


if __name__ == "__main__":
    import sys

    _child(sys.argv[1])
