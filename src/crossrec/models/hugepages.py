"""Embedding tables in transparent huge pages: fewer TLB misses for random row gathers.

A lookup over a 1.43 GB table touches rows all over it; with 4 KiB pages nearly every row is also a
TLB miss and a page walk. Linux backs anonymous memory with 2 MiB pages when the range is advised
``MADV_HUGEPAGE`` (``/sys/kernel/mm/transparent_hugepage/enabled`` = ``madvise``, the common
default, or ``always``). Measured on the 2-vCPU dev machine: the uniform-random fused fp32 lookup over
1.43 GB ran 1.25-1.6x faster from huge pages (BENCHMARKS.md §5).

Only the tables move: torch's own ``THP_MEM_ALLOC_ENABLE=1`` advises *every* large allocation, so
each call's fresh output buffer is faulted in and zeroed 2 MiB at a time — the same lookup ran 1.5x
*slower* with it. :func:`advise_tables_` copies each large table into a fresh advised anonymous mapping
(copying is what makes the kernel hand out huge pages at once; advising memory already touched waits
for ``khugepaged``) and points the module at it. The mapping lives as long as the tensor does
(``torch.frombuffer`` holds it); ``copy.deepcopy`` and ``state_dict`` copies are ordinary memory.
Elsewhere (not Linux, THP ``never``) nothing moves and the call says so by returning 0.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import torch
from torch import nn

from crossrec.models.embedding import FusedEmbeddingBag
from crossrec.models.quantized import QuantizedEmbeddingBag

MADV_HUGEPAGE = 14  # <linux/mman.h>
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str:
    """``"always"``, ``"madvise"`` or ``"never"`` (the bracketed word of the sysfs file); ``"unavailable"``
    off Linux or without the file.

    >>> thp_mode() in ("always", "madvise", "never", "unavailable")
    True
    """
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return "unavailable"
    return text[text.index("[") + 1:text.index("]")] if "[" in text else "unavailable"


def hugepage_copy(src: torch.Tensor) -> torch.Tensor | None:
    """A contiguous CPU copy of ``src`` in ``MADV_HUGEPAGE`` memory, or None where that is not possible.

    >>> t = torch.arange(12.0).view(3, 4)
    >>> h = hugepage_copy(t)
    >>> h is None or (torch.equal(h, t) and h.data_ptr() != t.data_ptr())
    True
    """
    if not sys.platform.startswith("linux") or thp_mode() not in ("always", "madvise") or src.device.type != "cpu":
        return None
    nbytes = src.numel() * src.element_size()
    if nbytes == 0:
        return None
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes), MADV_HUGEPAGE) != 0:
        return None  # e.g. a kernel without THP: keep the ordinary pages
    out = torch.frombuffer(buf, dtype=src.dtype, count=src.numel()).view(src.shape)  # holds `buf`
    out.copy_(src)
    return out


def advise_tables_(model: nn.Module, *, min_bytes: int = 32 * 2**20) -> int:
    """Move every embedding table of ``model`` of at least ``min_bytes`` into huge pages (in place);
    returns the bytes moved (0 where huge pages are unavailable). Predictions do not change.

    >>> from crossrec.models import ModelSpec, TableSpec, build
    >>> spec = ModelSpec(num_dense=1, tables=(TableSpec(name="a", num_embeddings=300_000),), embedding_dim=32,
    ...                  bottom_mlp=(4, 32), top_mlp=(8,))
    >>> advise_tables_(build(spec, seed=0)) in (0, 300_000 * 32 * 4)
    True
    """
    moved = 0
    for module in model.modules():
        if not isinstance(module, FusedEmbeddingBag):
            continue
        for bag in module.bags:
            weight = bag.weight
            if weight.numel() * weight.element_size() < min_bytes:
                continue
            copy = hugepage_copy(weight.detach())
            if copy is None:
                return moved
            with torch.no_grad():
                if isinstance(bag, QuantizedEmbeddingBag):
                    bag.weight = copy  # a registered buffer: reassigning keeps it registered
                else:
                    bag.weight.data = copy
            moved += copy.numel() * copy.element_size()
    return moved
