"""Training-cost accounting: what each KD method costs per step, measured rather than declared.

* **Trainable parameters** per module (teacher, adapter/temperature, student): counted from
  ``requires_grad`` after the method has frozen what it freezes — the numbers the optimizer really sees.
* **Teacher forward / backward passes per step**: :class:`PassCounter` puts a forward hook on the
  teacher (one count per call during a training step) and, when the teacher's output requires grad, a
  tensor hook on it that fires only if a backward pass actually goes through the teacher.
* **Wall-clock per epoch**: the time from the first batch of an epoch to its last optimizer step
  (evaluation excluded), measured by the task; on a shared CPU it is noisy, so the experiment reports
  the median over epochs and seeds and ratios to CE.
* **Training memory** (:func:`training_memory`): CPU has no allocator statistics, so the peak of one
  training step is *accounted* from its parts, each measured on the real step:
  ``parameters (all modules) + gradients (trainable) + AdamW state (2 × trainable) + activations
  saved for backward``. The last term is the total size of the distinct tensors autograd saves during
  the loss's forward pass (``torch.autograd.graph.saved_tensors_hooks``), excluding parameters. A frozen
  teacher run under ``no_grad`` saves nothing; a trained teacher saves all its activations. On CUDA the
  same function also reports ``torch.cuda.max_memory_allocated`` for one real step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class PassCounter:
    """Counts forward and backward passes through ``module`` while ``active`` is True."""

    def __init__(self, module: nn.Module):
        self.forward = 0
        self.backward = 0
        self.active = False
        self._handle = module.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if not self.active:
            return
        self.forward += 1
        out = output[0] if isinstance(output, (tuple, list)) else output
        if torch.is_tensor(out) and out.requires_grad:
            out.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1

    def remove(self) -> None:
        self._handle.remove()


def parameter_bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def training_memory(model: nn.Module, step_fn, batch: Any, optimizer_slots: int = 2) -> dict[str, float]:
    """Account the memory of one training step of ``step_fn(model, batch) -> dict of loss terms``.

    Runs on a deep copy of ``model`` (so batch-norm statistics and the caller's random state are left
    untouched) and returns MiB: ``params_mib``, ``grads_mib``, ``optimizer_mib``, ``activations_mib``,
    ``total_mib`` (and ``cuda_peak_mib`` on CUDA).
    """
    rng = torch.get_rng_state()
    work = copy.deepcopy(model)
    work.train()
    param_ptrs = {p.untyped_storage().data_ptr() for p in work.parameters()}
    trainable = [p for p in work.parameters() if p.requires_grad]
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = max(saved.get(ptr, 0), storage.nbytes())
        return t

    device = next(work.parameters()).device
    if device.type == "cuda":  # pragma: no cover - exercised on GPU machines only
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        terms = step_fn(work, batch)
    loss = sum(terms.values())
    if loss.requires_grad:
        loss.backward()
    mib = 1024.0**2
    out = {
        "params_mib": parameter_bytes(work.parameters()) / mib,
        "grads_mib": parameter_bytes(trainable) / mib,
        "optimizer_mib": optimizer_slots * parameter_bytes(trainable) / mib,
        "activations_mib": sum(saved.values()) / mib,
    }
    out["total_mib"] = sum(out.values())
    if device.type == "cuda":  # pragma: no cover
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / mib
    del work
    torch.set_rng_state(rng)
    return out
