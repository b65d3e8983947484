"""One training step captured as a CUDA graph and replayed for every full batch.

On a GPU this model's step is bound by kernel launches, not arithmetic: about 70 small
kernels whose launches cost more than their work. A graph launches them all at once. The
step (forward, loss, backward, Adam) is captured on a static input buffer; each full batch
is copied into that buffer and the graph replayed. Capturing needs a few real steps first
(cuDNN and cuBLAS set themselves up, Adam creates its state), so the model's weights and
Adam's state are put back afterwards exactly as they were: the graphed attempt trains the
same steps as an eager one. Where the warm-up or the capture fails, GraphedStep raises
with them put back too, and the caller trains eagerly (pipeline.training.attempt).

Only CUDA: the CPU never asks for it (pipeline.training.hardware.Hardware.cuda_graphs), and
side_stream refuses any other device.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

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


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}
"""side_stream's, by device index: made at the process's first capture on the device."""


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """The process's one side stream on the device, for every warm-up and capture: cuBLAS
    keeps a workspace per stream, so the warm-up on the stream that captures creates it
    outside any graph's private memory pool, and later captures find it there. ValueError
    on another device: a CUDA graph holds only CUDA work."""
    if device.type != "cuda":
        raise ValueError(f"a CUDA graph captures CUDA work only, not {device.type}'s")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(index)
    return _SIDE_STREAMS[index]


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream) -> Iterator[None]:
    """Work queued on `stream`, after what the current stream queued before it; the
    current stream waits for it after, whether or not it raised."""
    stream.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        torch.cuda.current_stream().wait_stream(stream)


def capture(
    step: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, stream: torch.cuda.Stream
) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """`step` on x captured as a graph on `stream`, and its loss tensor (the graph's to
    refill). Python's garbage is collected first and not during the capture (torch.cuda.graph
    collects only when told to, TORCH_CUDAGRAPH_GC): a collection inside it could free
    tensors whose memory the graph would then reuse. The current stream is the one before,
    however the capture ends (torch.cuda.graph leaves its stream current where ending the
    capture raises)."""
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(torch.cuda.current_stream()), torch.cuda.graph(graph, stream=stream):
            loss = step(x)
    finally:
        if collecting:
            gc.enable()
    return graph, loss


class GraphedStep:
    """`step` (a training step on a batch, returning its detached loss) captured once for
    batches shaped like `example`, which is not trained on: call it for each batch.
    Raises whatever makes the warm-up or the capture fail, with the model's weights and
    the optimiser's state put back as they were: the caller can go on eagerly."""

    def __init__(
        self,
        step: Callable[[torch.Tensor], torch.Tensor],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        example: torch.Tensor,
    ) -> None:
        self.input = example.detach().clone()  # keeps example's memory format
        self.replays = 0
        saved = _Saved(model, optimizer)
        try:
            stream = side_stream(example.device)
            with on_stream(stream):
                for _ in range(WARMUP_STEPS):
                    step(self.input)
            saved.restore()
            optimizer.zero_grad(set_to_none=True)  # the graph's backward owns the gradients
            self.graph, self.loss = capture(step, self.input, stream)
        except Exception:
            saved.restore()  # the warm-up's steps, or any a failed capture left, undone
            optimizer.zero_grad(set_to_none=True)
            raise

    def fits(self, batch: torch.Tensor) -> bool:
        return batch.shape == self.input.shape

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """One step on the batch (shaped as the example); its loss, a tensor of its own."""
        self.input.copy_(batch)
        self.graph.replay()
        self.replays += 1
        return self.loss.clone()
