"""One training step captured as a CUDA graph and replayed for every full batch.

On a GPU this model's step is bound by kernel launches, not arithmetic: about 70 small
kernels whose launches cost more than their work. A graph launches them all at once. The
step (forward, loss, backward, Adam) is captured on a static input buffer; each full batch
is copied into that buffer and the graph replayed. Capturing needs a few real steps first
(cuDNN and cuBLAS set themselves up, Adam creates its state), so the model's weights and
Adam's state are put back afterwards exactly as they were: the graphed attempt trains the
same steps as an eager one.

Only CUDA: the CPU never comes here (pipeline.training.hardware.Hardware.cuda_graphs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

WARMUP_STEPS = 3
"""Real steps before the capture, on a side stream, as PyTorch's CUDA graph notes do; their
effect on the weights and Adam's state is undone."""


class _Saved:
    """The weights and optimiser state as they were, to put back after the warm-up. A
    parameter that had no optimiser state gets it back at zeros: Adam's state starts so (its
    step count and both moments)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.weights = [t.detach().clone() for t in model.state_dict().values()]
        self.state = {
            p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
            for p, s in optimizer.state.items()
        }

    @torch.no_grad()
    def restore(self) -> None:
        for now, then in zip(self.model.state_dict().values(), self.weights, strict=True):
            now.copy_(then)
        for p, state in self.optimizer.state.items():
            before = self.state.get(p, {})
            for key, value in state.items():
                if key in before:
                    value.copy_(before[key])
                elif torch.is_tensor(value):
                    value.zero_()


class GraphedStep:
    """`step` (a training step on a batch, returning its detached loss) captured once for
    batches shaped like `example`, which is not trained on: call it for each batch."""

    def __init__(
        self,
        step: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        example: torch.Tensor,
    ) -> None:
        self.input = example.detach().clone()  # keeps example's memory format
        saved = _Saved(model, optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step(self.input)
        torch.cuda.current_stream().wait_stream(side)
        saved.restore()
        optimizer.zero_grad(set_to_none=True)  # the graph's backward owns the gradients
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step(self.input)

    def fits(self, batch: torch.Tensor) -> bool:
        return batch.shape == self.input.shape

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """One step on the batch (shaped as the example); its loss, a tensor of its own."""
        self.input.copy_(batch)
        self.graph.replay()
        return self.loss.clone()
