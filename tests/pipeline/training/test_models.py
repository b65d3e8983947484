import pytest
import torch

from pipeline.training.models import ConvAutoencoder, LinearAutoencoder, build_model, count_params


@pytest.mark.parametrize(
    ("latent_dim", "total"), [(3, 199_556), (10, 228_235), (100, 596_965), (250, 1_211_515)]
)
def test_conv_parameter_counts_match_the_closed_form(latent_dim, total):
    counts = count_params(ConvAutoencoder(latent_dim))
    assert counts.total == total == 187_265 + 4_097 * latent_dim
    assert counts.encoder == 92_672 + 2_049 * latent_dim
    assert counts.decoder == 94_593 + 2_048 * latent_dim


def test_linear_baseline_is_bias_free_784_d_784():
    model = LinearAutoencoder(10)
    assert count_params(model).total == 15_680
    assert model.encoder.bias is None and model.decoder.bias is None


@pytest.mark.parametrize("kind", ["conv", "linear"])
@pytest.mark.parametrize("latent_dim", [3, 250])
def test_shapes_of_encode_decode_forward(kind, latent_dim):
    model = build_model(kind, latent_dim)
    x = torch.rand(5, 1, 28, 28)
    z = model.encode(x)
    assert z.shape == (5, latent_dim)
    assert model.decode(z).shape == (5, 1, 28, 28)
    torch.testing.assert_close(model(x), model.decode(z))


def test_conv_outputs_are_pixel_intensities():
    out = build_model("conv", 10)(torch.rand(4, 1, 28, 28))
    assert out.min() >= 0 and out.max() <= 1


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="model kind"):
        build_model("mlp", 10)


def test_conv_weights_are_he_initialised_unless_asked_otherwise():
    torch.manual_seed(0)
    layers = [m for m in ConvAutoencoder(100).modules() if hasattr(m, "bias")]
    assert len(layers) == 8  # 3 convolutions, 2 linear maps, 3 transposed convolutions
    for layer in layers:
        w = layer.weight
        fan_in = w[0].numel()  # torch's fan_in: dim 1 times the kernel, also when transposed
        assert torch.count_nonzero(layer.bias) == 0
        assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    torch.manual_seed(0)
    pytorch = ConvAutoencoder(100, init="pytorch")
    assert torch.count_nonzero(pytorch.encoder[0].bias) > 0  # each layer's own default
    with pytest.raises(ValueError, match="init must be one of"):
        ConvAutoencoder(10, init="xavier")
