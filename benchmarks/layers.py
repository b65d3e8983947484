"""Layer benchmark: where a conv training step's time goes, layer by layer, in float32
and in bfloat16, against this machine's matrix-multiply rate in each (measured in the
same run).

Each convolution, transposed convolution and linear map of the conv autoencoder is timed
alone on a training batch, forward and backward (the gradients a training step needs:
the weights', and the input's except for the first layer), in the layout the project
trains in (channels_last): in float32 as itself and in each other formulation listed in
FORMULATIONS, and as itself under bfloat16 autocast (as precision=bf16 trains: bfloat16
activations in, the float32 weights cast per use). Every formulation is first checked to
give the float32 module's output and gradients within float32 tolerance, autocast within
bfloat16's. Prints per layer: its FLOPs per step, milliseconds forward and backward, the
rate it reaches, and that rate as a fraction of the matrix multiply's in its precision;
then the rest of the step (the layers without weights, the loss, Adam) and the whole
training step in each precision, as pipeline.training.attempt runs it, for the sum.

    .venv/bin/python -m benchmarks.layers                  # d=100, batch 128, fp32 and bf16
    .venv/bin/python -m benchmarks.layers --repeats 5      # smoke size
    .venv/bin/python -m benchmarks.layers --precisions fp32

bf16 is left out, with a line saying so, where oneDNN has no bfloat16 kernels.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.epoch import flops_per_image, gemm_rate, precisions_here
from pipeline.config import TrainConfig
from pipeline.training.attempt import Attempt
from pipeline.training.hardware import Hardware
from pipeline.training.models import ConvAutoencoder
from pipeline.training.tensors import flush_denormals
from tracking.host import bf16_support, cpu_model, instruction_set

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


CPU = torch.device("cpu")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BF16_TOLERANCE = 0.05
"""Autocast against float32, relative (and of the largest magnitude, absolute): bfloat16
keeps 8 significant bits (2^-8 = 0.4% per rounding), over sums of hundreds of terms."""
Timed = tuple[float, float]  # median seconds forward, backward


def has_weights(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))


def layers_and_inputs(model: nn.Module, batch: int) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, layer, its float32 input in a training step) for every layer of the model."""
    found, x = [], torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    for part in (model.encoder, model.decoder):
        for index, layer in enumerate(part):
            name = f"{'encoder' if part is model.encoder else 'decoder'}[{index}]"
            found.append((f"{name} {describe(layer)}", layer, x.detach().clone()))
            with torch.no_grad():
                x = layer(x)
    return found


def describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    if has_weights(layer):
        return f"{type(layer).__name__} {layer.in_channels}->{layer.out_channels}"
    return type(layer).__name__


def as_trained(x: torch.Tensor, precision: str, needs_grad: bool) -> torch.Tensor:
    """A layer's input as a training step in this precision gives it: under autocast every
    layer after the first gets the bfloat16 activations of the one before."""
    dtype = DTYPES[precision] if needs_grad else torch.float32  # the first: the images
    return x.detach().to(dtype).requires_grad_(needs_grad)


def under(precision: str, layer: Layer) -> Layer:
    """The layer's forward in the precision's training context (pipeline.training.hardware)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with Hardware(CPU, precision).autocast():
            return layer(x)

    return forward


def step_parts(layer: Layer, params: list, x: torch.Tensor, grad_out: torch.Tensor):
    """Forward and backward of one layer as a training step runs them."""
    out = layer(x)
    wanted = params + ([x] if x.requires_grad else [])
    return out, torch.autograd.grad(out, wanted, grad_out)


def timed(layer: Layer, params: list, x: torch.Tensor, grad_out, repeats: int) -> Timed:
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


def check_autocast(layer: nn.Module, params, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    """The layer under bfloat16 autocast, on bfloat16 x and grad_out, gives its float32
    output and gradients (on the same values in float32) within BF16_TOLERANCE."""
    x32 = x.detach().float().requires_grad_(x.requires_grad)
    expected = step_parts(layer, params, x32, grad_out.float())
    got = step_parts(under("bf16", layer), params, x, grad_out)
    for a, b in zip((expected[0], *expected[1]), (got[0], *got[1]), strict=True):
        scale = BF16_TOLERANCE * a.abs().max().item()
        torch.testing.assert_close(b.float(), a, rtol=BF16_TOLERANCE, atol=scale)


def flops(layer: nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one forward and backward pass."""
    with FlopCounterMode(display=False) as counter:
        out = layer(x)
        out.backward(torch.ones_like(out))
    layer.zero_grad(set_to_none=True)
    x.grad = None
    return counter.get_total_flops()


def profile_layer(
    name: str, layer: nn.Module, x: torch.Tensor, precision: str, rate: float, repeats: int
) -> dict[str, float]:
    """Print and return {formulation: seconds forward and backward} for one layer with
    weights in one precision; x is its input as as_trained gives it."""
    params = list(layer.parameters())
    work = flops(layer, x.detach().float().requires_grad_(x.requires_grad))
    if precision == "bf16":
        candidates = {"module": under("bf16", layer)}
    else:
        candidates = {"module": layer} | {
            form: makers[type(layer)](layer)
            for form, makers in FORMULATIONS.items()
            if type(layer) in makers
        }
    with torch.no_grad():
        grad_out = torch.randn_like(candidates["module"](x))
    times = {}
    for form, candidate in candidates.items():
        if precision == "bf16":
            check_autocast(layer, params, x, grad_out)
        else:
            check_equal(layer, candidate, params, x, grad_out)
        fwd, bwd = timed(candidate, params, x, grad_out, repeats)
        times[form] = fwd + bwd
        achieved = work / (fwd + bwd)
        print(
            f"{name:44s} {form:7s} {precision:5s} {work / 1e6:7.1f} {fwd * 1e3:7.2f} "
            f"{bwd * 1e3:7.2f} {achieved / 1e9:8.0f} {achieved / rate:8.2f}",
            flush=True,
        )
    return times


def rest_of_step(layers: list, precision: str, repeats: int) -> dict[str, Timed]:
    """The layers without weights (in-place ReLUs timed as F.relu) and the loss, forward
    and backward, as a training step in this precision runs them."""
    elementwise = [0.0, 0.0]
    for _, layer, x in layers[1:]:  # the first has weights: the rest get activations
        if not has_weights(layer):
            fn = F.relu if isinstance(layer, nn.ReLU) else layer
            x = as_trained(x, precision, needs_grad=True)
            with torch.no_grad():
                grad_out = torch.randn_like(fn(x))
            for i, seconds in enumerate(timed(fn, [], x, grad_out, repeats)):
                elementwise[i] += seconds
    *_, (_, last, x) = layers
    with torch.no_grad():
        out = as_trained(last(x), precision, needs_grad=True)  # the sigmoid's output
    target = torch.rand_like(out, dtype=torch.float32)
    loss = timed(lambda o: F.mse_loss(o.float(), target), [], out, torch.ones(()), repeats)
    return {"elementwise": tuple(elementwise), "loss": loss}


def adam_seconds(model: nn.Module, repeats: int) -> float:
    """Median seconds of the project's optimiser step (pipeline.training.attempt's: fused Adam on
    the float32 weights, in either precision), on random gradients."""
    att = Attempt(lambda: copy.deepcopy(model), 0, TrainConfig(), Hardware(CPU, "fp32"), None)
    for p in att.model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        att.optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def whole_step(model: nn.Module, x: torch.Tensor, precision: str, repeats: int) -> float:
    """Median seconds of a training step as the project runs it (Attempt.train_step)."""
    config = TrainConfig(precision=precision)
    att = Attempt(lambda: copy.deepcopy(model), 0, config, Hardware(CPU, precision), None)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        att.train_step(x)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_rest(rest: dict[str, dict[str, Timed]], adam: float) -> None:
    print(f"\n{'rest of the step':50s} {'prec':5s} {'fwd ms':>7} {'bwd ms':>7}")
    parts = {
        "elementwise": "elementwise: ReLU x5, Flatten, Unflatten, Sigmoid",
        "loss": "loss: MSE of the output as float32",
    }
    for part, label in parts.items():
        for precision, times in rest.items():
            fwd, bwd = times[part]
            print(f"{label:50s} {precision:5s} {fwd * 1e3:7.2f} {bwd * 1e3:7.2f}")
    print(f"{'adam: fused step of the float32 weights':50s} {'both':5s} {adam * 1e3:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    args = parser.parse_args()
    flush_denormals()
    print(
        f"host: {instruction_set()}, {cpu_model()}, {bf16_support()}, "
        f"{torch.get_num_threads()} threads; d={args.latent_dim}, batch {args.batch}"
    )
    precisions = precisions_here(args.precisions)
    torch.manual_seed(0)
    model = ConvAutoencoder(args.latent_dim).to(memory_format=torch.channels_last)
    rates = {p: gemm_rate(dtype=DTYPES[p]) for p in precisions}
    print("matrix multiply: " + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in rates.items()))
    print(
        f"{'layer':44s} {'form':7s} {'prec':5s} {'MFLOP':>7} {'fwd ms':>7} {'bwd ms':>7} "
        f"{'GFLOP/s':>8} {'x matmul':>8}"
    )
    layers = layers_and_inputs(model, args.batch)
    per_layer = {p: [] for p in precisions}
    for index, (name, layer, x) in enumerate(layers):
        for p in precisions if has_weights(layer) else ():
            x_in = as_trained(x, p, needs_grad=index > 0)
            per_layer[p].append(profile_layer(name, layer, x_in, p, rates[p], args.repeats))
    rest = {p: rest_of_step(layers, p, args.repeats) for p in precisions}
    adam = adam_seconds(model, args.repeats)
    print_rest(rest, adam)
    x = torch.rand(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    step_flops = flops_per_image("conv", args.latent_dim, args.batch) * args.batch
    print()
    steps = {p: whole_step(model, x, p, args.repeats) for p in precisions}
    for p, step in steps.items():
        others = sum(sum(t) for t in rest[p].values()) + adam
        print_step(p, step, step_flops, rates[p], per_layer[p], others)
    if len(steps) == 2:
        print(f"bf16 step / fp32 step: {steps['bf16'] / steps['fp32']:.2f}x")


def print_step(
    precision: str, step: float, step_flops: float, rate: float, per_layer: list, rest: float
) -> None:
    """The whole step against its floor, and what its parts add up to."""
    sums = {  # a layer without this formulation counts as the module
        form: sum(times.get(form, times["module"]) for times in per_layer)
        for form in ("module", *FORMULATIONS)
        if form == "module" or precision == "fp32"
    }
    if precision == "fp32":
        sums["fastest per layer"] = sum(min(times.values()) for times in per_layer)
    floor = step_flops / rate
    print(
        f"whole training step, {precision}: {step * 1e3:.2f} ms for {step_flops / 1e6:.0f} "
        f"MFLOP (floor {floor * 1e3:.2f} ms at the {precision} matrix multiply's rate, so "
        f"{step / floor:.2f}x the floor)\n  the layers alone, forward and backward: "
        + ", ".join(f"{form} {t * 1e3:.2f} ms" for form, t in sums.items())
        + f"; the rest (elementwise, loss, Adam) {rest * 1e3:.2f} ms; modules and rest "
        f"{(sums['module'] + rest) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
