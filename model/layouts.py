"""Weight layouts for a decode step's small matrix products, and the copies they need.

A decode step multiplies a few rows by every weight of the text decoder, so it should read those weights at the
speed memory streams. With a few rows, how fast a CPU's kernels read a weight depends on how it is laid out in
memory, and which layout wins depends on the processor:

- **row-major**: [out, in] as stored (and as transformers multiplies): the reference.
- **column-major**: the same tensor transposed in memory (strides (1, out)); the parameters themselves are laid
  out so, no copy (a tied output embedding is copied: its rows must stay row-major for the token lookup).
- **packed**: oneDNN's own blocked format (`torch.ops.mkldnn._reorder_linear_weight`), multiplied with
  `torch.ops.mkldnn._linear_pointwise`; it read the weights of a batch-8 step 1.3 to 1.7 times faster than MKL's
  products on an Intel Xeon with AMX. It is a copy of every decoder weight, so it is only offered when twice the
  decoder's weights fit comfortably in free memory (`packing_fits`).

Values never change, only how they are read: every layout gives the same tokens (tests/model/test_tuning.py).
The runner times whole decode steps in each layout and keeps the fastest (model/runner.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .gemma import PLAIN, Projections
from .tuning import thread_options, time_candidates

if TYPE_CHECKING:
    from .paligemma import PaliGemma

LAYOUTS = ("row-major", "column-major", "packed")
# Packed copies are offered when the decoder's weights take at most this share of the memory still available.
PACKED_SHARE = 0.25


def decoder_linears(model: PaliGemma) -> list[nn.Linear]:
    """The matrix products of a decode step: every projection of the text decoder, and an untied lm_head."""
    linears = [m for m in model.language_model.modules() if isinstance(m, nn.Linear)]
    if hasattr(model, "lm_head"):
        linears.append(model.lm_head)
    return linears


def lay_out(weight: torch.Tensor, layout: str, rows: int = 8) -> torch.Tensor:
    """`weight` [out, in] with the same values in `layout` (packed for products of about `rows` rows)."""
    if layout == "row-major":
        return weight.contiguous()
    if layout == "column-major":
        return weight.t().contiguous().t()
    if layout == "packed":
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
    raise ValueError(f"unknown weight layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., in] times a packed weight (see lay_out): oneDNN's linear."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def available_bytes() -> int | None:
    """Memory still available to new allocations (Linux's MemAvailable), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def packing_works(dtype: torch.dtype) -> bool:
    """Whether torch here can pack and multiply weights of this dtype with oneDNN."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.ones(8, 16, dtype=dtype)
        return bool(packed_linear(torch.ones(2, 16, dtype=dtype), lay_out(w, "packed", 2)).eq(16).all())
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def packing_fits(model: PaliGemma) -> bool:
    """Packed copies of the decoder's weights (and the output projection) fit in PACKED_SHARE of free memory."""
    weights = [m.weight for m in decoder_linears(model)] + [model.head_weight()]
    total = sum(w.numel() * w.element_size() for w in weights)
    free = available_bytes()
    return free is not None and total <= PACKED_SHARE * free


def candidate_layouts(model: PaliGemma) -> tuple[str, ...]:
    """The layouts worth timing for this model on its device (all of them on a CPU that can pack, with room)."""
    if model.device.type != "cpu":
        return ("row-major",)
    if packing_works(model.dtype) and packing_fits(model):
        return LAYOUTS
    return LAYOUTS[:2]


class LaidOut(Projections):
    """The decoder's linear maps computed from copies of its weights in another layout.

    weights: a copy per module (empty for column-major, where the parameters themselves are laid out);
    head: a copy of the output projection (a tied embedding must keep its own rows); packed: the copies are in
    oneDNN's format.
    """

    def __init__(self, weights: dict[nn.Module, torch.Tensor], head: torch.Tensor | None, packed: bool):
        self.weights, self.head_weight, self.packed = weights, head, packed

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        weight = self.weights.get(module)
        if weight is None:
            return module(x)
        return packed_linear(x, weight, module.bias) if self.packed else F.linear(x, weight, module.bias)

    def head(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The output projection from the copy when there is one, from the model's own `weight` otherwise."""
        if self.head_weight is None:
            return F.linear(h, weight)
        return packed_linear(h, self.head_weight) if self.packed else F.linear(h, self.head_weight)


def apply_layout(model: PaliGemma, layout: str, rows: int) -> Projections:
    """Lay the model's decoder weights out in `layout` and return the projections that read them so.

    Row- and column-major change the parameters' memory layout in place: they stay the same objects (an
    optimizer holding them still trains them) with the same values. Packed leaves them row-major and makes
    packed copies, which the returned projections use.
    """
    tied = not hasattr(model, "lm_head")
    strided = "row-major" if layout == "packed" else layout
    with torch.inference_mode(False), torch.no_grad():  # the parameters must stay usable for training
        for linear in decoder_linears(model):
            if not _has_layout(linear.weight, strided):
                linear.weight.data = lay_out(linear.weight.data, strided)
        if layout == "packed":
            weights = {
                m: lay_out(m.weight, "packed", rows) for m in decoder_linears(model) if m is not model_head(model)
            }
            return LaidOut(weights, lay_out(model.head_weight(), "packed", rows), packed=True)
    if tied and layout == "column-major":
        return LaidOut({}, lay_out(model.head_weight(), layout), packed=False)
    return PLAIN


def model_head(model: PaliGemma) -> nn.Module | None:
    """The untied lm_head, None when the output projection is the token embedding."""
    return getattr(model, "lm_head", None)


def _has_layout(weight: torch.Tensor, layout: str) -> bool:
    return weight.is_contiguous() if layout == "row-major" else weight.t().is_contiguous()


@contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside the block, put back after."""
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads != before:
            torch.set_num_threads(before)


def with_threads(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` to be called on `threads` threads."""

    def call() -> object:
        with using_threads(threads):
            return fn()

    return call


def time_prefill_threads(model: PaliGemma, sync: Callable[[], None], rows: int = 256) -> dict[int, list[float]]:
    """Seconds of a prefill-sized product (`rows` tokens through a slice of the first MLP, at most 2048 wide) at
    each thread count worth trying. Prefills and the vision tower are large products that every thread usually
    speeds up, unless other work holds the cores: then each parallel region waits for the busiest one."""
    mlp = model.language_model.layers[0].mlp
    width = min(mlp.gate_proj.weight.shape[0], 2048)
    gate, down = mlp.gate_proj.weight[:width], mlp.down_proj.weight[:, :width]
    x = torch.randn(rows, gate.shape[1], dtype=gate.dtype, device=gate.device)
    y = torch.randn(rows, width, dtype=gate.dtype, device=gate.device)

    def products() -> object:
        return F.linear(x, gate), F.linear(y, down)

    return time_candidates({t: with_threads(t, products) for t in thread_options(torch.get_num_threads())}, sync)
