"""Layer benchmark: where a conv training step's time goes, layer by layer, against the
float32 matrix-multiply rate of this machine (measured in the same run).

Each convolution, transposed convolution and linear map of the conv autoencoder is timed
alone on a training batch, forward and backward (the gradients a training step needs:
the weights', and the input's except for the first layer), in the layout the project
trains in (channels_last), and in each other formulation listed in FORMULATIONS. Every
formulation is first checked to give the module's output and gradients within float32
tolerance. Prints per layer: its FLOPs per step, milliseconds forward and backward, the
rate it reaches, and that rate as a fraction of the matrix multiply's; then the whole
training step (model, loss, backward, Adam) for the sum.

    .venv/bin/python -m benchmarks.layers                  # d=100, batch 128
    .venv/bin/python -m benchmarks.layers --repeats 5      # smoke size
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.epoch import flops_per_image, gemm_rate
from pipeline.models import ConvAutoencoder
from pipeline.tensors import flush_denormals
from tracking.host import instruction_set

Layer = Callable[[torch.Tensor], torch.Tensor]


def conv_as_matmul(conv: nn.Conv2d) -> Layer:
    """A stride-s 3x3 convolution as one matrix multiply over the 9 shifted, strided
    views of the zero-padded channels_last input (im2col without F.unfold)."""
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        nhwc = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)
        taps = [nhwc[:, i : i + s * ho : s, j : j + s * wo : s] for i in range(k) for j in range(k)]
        cols = torch.cat(taps, dim=3).reshape(n * ho * wo, -1)
        weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        out = torch.addmm(conv.bias, cols, weight.t())
        return out.view(n, ho, wo, -1).permute(0, 3, 1, 2)

    return forward


def transposed_as_matmul(conv: nn.ConvTranspose2d) -> Layer:
    """A stride-2 3x3 transposed convolution (padding 1) as its four output phases, each
    one matrix multiply over the input taps that reach it: even rows take kernel row 1,
    odd rows kernel rows 0 (input row + 1) and 2 (input row); the same for columns."""
    op = conv.output_padding[0]
    # (kernel index, input shift) per output parity
    parity_taps = {0: ((1, 0),), 1: ((0, 1), (2, 0))}

    def forward(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        nhwc = F.pad(x, (0, 1, 0, 1)).permute(0, 2, 3, 1)  # row/col h: zeros for shift 1
        rows = []
        for r in (0, 1):
            cols_out = []
            for c in (0, 1):
                taps = [(ki, si, kj, sj) for ki, si in parity_taps[r] for kj, sj in parity_taps[c]]
                cols = torch.cat([nhwc[:, si : si + h, sj : sj + w] for _, si, _, sj in taps], 3)
                weight = torch.cat([conv.weight[:, :, ki, kj] for ki, _, kj, _ in taps], 0)
                out = torch.addmm(conv.bias, cols.reshape(n * h * w, -1), weight)
                cols_out.append(out.view(n, h, w, -1))
            rows.append(torch.stack(cols_out, dim=3))  # n, h, w, 2, C
        full = torch.stack(rows, dim=2).reshape(n, 2 * h, 2 * w, -1)  # n, h, 2, w, 2, C
        size = 2 * h - 1 + op
        return full[:, :size, :size].permute(0, 3, 1, 2)

    return forward


def transposed_as_fold(conv: nn.ConvTranspose2d) -> Layer:
    """A transposed convolution as one matrix multiply of every input pixel's channels by
    the kernel, whose 3x3 patches F.fold then adds up into the output (col2im)."""
    k, s, p, op = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.output_padding[0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        size = ((h - 1) * s - 2 * p + k + op, (w - 1) * s - 2 * p + k + op)
        cols = x.permute(0, 2, 3, 1).reshape(-1, c) @ conv.weight.reshape(c, -1)
        cols = cols.view(n, h * w, -1).transpose(1, 2)
        out = F.fold(cols, size, k, padding=p, stride=s)
        return out + conv.bias.view(1, -1, 1, 1)

    return forward


FORMULATIONS: dict[str, dict[type, Callable[[nn.Module], Layer]]] = {
    "matmul": {nn.Conv2d: conv_as_matmul, nn.ConvTranspose2d: transposed_as_matmul},
    "fold": {nn.ConvTranspose2d: transposed_as_fold},
}
"""Other ways to compute a layer, by the layer types they apply to; every layer is also
timed as itself ("module")."""


def layers_and_inputs(model: nn.Module, batch: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, layer, its input in a training step) for every layer with weights."""
    found, x = [], torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    for part in (model.encoder, model.decoder):
        for index, layer in enumerate(part):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                name = f"{'encoder' if part is model.encoder else 'decoder'}[{index}]"
                found.append((f"{name} {describe(layer)}", layer, x.detach()))
            with torch.no_grad():
                x = layer(x)
    return found


def describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    return f"{type(layer).__name__} {layer.in_channels}->{layer.out_channels}"


def step_parts(layer: Layer, params: list, x: torch.Tensor, grad_out: torch.Tensor):
    """Forward and backward of one layer as a training step runs them."""
    out = layer(x)
    wanted = params + ([x] if x.requires_grad else [])
    return out, torch.autograd.grad(out, wanted, grad_out)


def timed(layer: Layer, params: list, x: torch.Tensor, grad_out, repeats: int):
    """Median seconds forward and backward."""
    fwd, bwd = [], []
    for i in range(repeats + 3):  # 3 warm-up rounds
        start = time.perf_counter()
        out = layer(x)
        mid = time.perf_counter()
        wanted = params + ([x] if x.requires_grad else [])
        torch.autograd.grad(out, wanted, grad_out)
        end = time.perf_counter()
        if i >= 3:
            fwd.append(mid - start)
            bwd.append(end - mid)
    return statistics.median(fwd), statistics.median(bwd)


def check_equal(reference: Layer, other: Layer, params, x, grad_out) -> None:
    """The other formulation's output and gradients equal the module's within float32
    tolerance (a weight gradient sums over batch x positions: 25,088 terms here)."""
    out_a, grads_a = step_parts(reference, params, x, grad_out)
    out_b, grads_b = step_parts(other, params, x, grad_out)
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item())


def flops(layer: nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one forward and backward pass."""
    with FlopCounterMode(display=False) as counter:
        out = layer(x)
        out.backward(torch.ones_like(out))
    layer.zero_grad(set_to_none=True)
    x.grad = None
    return counter.get_total_flops()


def whole_step(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of a training step as the project runs it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        loss = F.mse_loss(model(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    flush_denormals()
    torch.manual_seed(0)
    model = ConvAutoencoder(args.latent_dim).to(memory_format=torch.channels_last)
    rate = gemm_rate()
    print(
        f"host: {instruction_set()}, {torch.get_num_threads()} threads; "
        f"d={args.latent_dim}, batch {args.batch}; float32 matrix multiply {rate / 1e9:.0f} "
        "GFLOP/s"
    )
    print(
        f"{'layer':44s} {'form':7s} {'MFLOP':>7} {'fwd ms':>7} {'bwd ms':>7} "
        f"{'GFLOP/s':>8} {'x matmul':>8}"
    )
    per_layer = [
        profile_layer(name, layer, x.requires_grad_(first > 0), rate, args.repeats)
        for first, (name, layer, x) in enumerate(layers_and_inputs(model, args.batch))
    ]
    x = torch.rand(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    step = whole_step(model, x, args.repeats)
    step_flops = flops_per_image("conv", args.latent_dim, args.batch) * args.batch
    sums = {  # a layer without this formulation counts as the module
        form: sum(times.get(form, times["module"]) for times in per_layer)
        for form in ("module", *FORMULATIONS)
    }
    sums["fastest per layer"] = sum(min(times.values()) for times in per_layer)
    print(
        f"\nwhole training step: {step * 1e3:.2f} ms for {step_flops / 1e6:.0f} MFLOP "
        f"(floor {step_flops / rate * 1e3:.2f} ms, so {step * rate / step_flops:.2f}x the floor)"
        "\nthe layers alone, forward and backward: "
        + ", ".join(f"{form} {t * 1e3:.2f} ms" for form, t in sums.items())
    )


def profile_layer(name: str, layer: nn.Module, x: torch.Tensor, rate: float, repeats: int):
    """Print and return {formulation: seconds forward and backward} for one layer."""
    params = list(layer.parameters())
    with torch.no_grad():
        grad_out = torch.randn_like(layer(x))
    work = flops(layer, x)
    candidates = {"module": layer} | {
        form: makers[type(layer)](layer)
        for form, makers in FORMULATIONS.items()
        if type(layer) in makers
    }
    times = {}
    for form, candidate in candidates.items():
        check_equal(layer, candidate, params, x, grad_out)
        fwd, bwd = timed(candidate, params, x, grad_out, repeats)
        times[form] = fwd + bwd
        achieved = work / (fwd + bwd)
        print(
            f"{name:44s} {form:7s} {work / 1e6:7.1f} {fwd * 1e3:7.2f} {bwd * 1e3:7.2f} "
            f"{achieved / 1e9:8.0f} {achieved / rate:8.2f}",
            flush=True,
        )
    return times


if __name__ == "__main__":
    main()
