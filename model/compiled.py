"""The compiled decode step: `torch.compile` of `PaliGemma.decode_step` with settings that pay off per device.

The step has fixed shapes for a given (slots, cache length) and no host synchronization, so it compiles as one
graph (fullgraph=True) and, on CUDA, is captured as a CUDA graph (mode "reduce-overhead"): a PaliGemma-1 3B step
issues about 640 kernels, whose launches cost more host time than the GPU spends on them at batch 64. On a CPU,
inductor's default settings gained nothing measurable on the processors this was tried on; with freezing (weights
folded into the graph as constants and prepacked) and its C++ GEMM template (max-autotune) the step ran up to 1.7
times faster on one Intel Xeon and slower on an AMD EPYC, which is why the runner times it against the eager step
before keeping it (model/runner.py). Compiling costs tens of seconds per (slots, length) bucket, which the runner
keeps few.

Freezing folds the weights in as they are when the step first runs: a compiled step does not see later changes to
the weights (training), and holds its own prepacked copy of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def compile_options(device: torch.device) -> dict:
    """torch.compile's keyword arguments for a decode step on this kind of device."""
    if device.type == "cuda":
        return {"mode": "reduce-overhead"}
    return {"options": {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}}


def compile_step(step: Callable, device: torch.device) -> Callable:
    """`step` (a decode step: tokens, lengths, cache -> logits) compiled as one graph per shape."""
    import torch._dynamo

    # Each (slots, cache length) bucket is a graph of its own; the runner keeps them to a handful.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return torch.compile(step, fullgraph=True, dynamic=False, **compile_options(device))
