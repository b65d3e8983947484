import pytest
import torch

from pipeline.training.models import (
    MNIST_SHAPE,
    ConvAutoencoder,
    LinearAutoencoder,
    build_model,
    count_params,
    halvings,
    he_init,
    output_paddings,
)


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


class ExerciseConv(torch.nn.Module):
    """The exercise's model as it was before models took their shape from the data: the
    reference the 1x28x28 model must equal, layer for layer and draw for draw."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        nn = torch.nn
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128 * 4 * 4),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=0),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )


@pytest.mark.parametrize("init", ["he", "pytorch"])
def test_the_1x28x28_model_is_the_exercise_s_bit_for_bit(init):
    torch.manual_seed(7)
    reference = ExerciseConv(100)
    if init == "he":
        he_init(reference)
    after_reference = torch.rand(4)
    torch.manual_seed(7)
    model = ConvAutoencoder(100, MNIST_SHAPE, init=init)
    after_model = torch.rand(4)
    assert str(model.encoder) == str(reference.encoder)
    assert str(model.decoder) == str(reference.decoder)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(after_model, after_reference)  # as many draws: what follows is alike


@pytest.mark.parametrize(
    "shape", [(3, 32, 32), (1, 28, 28), (1, 8, 8), (3, 9, 13), (1, 64, 48), (3, 31, 17)]
)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_a_model_gives_back_its_input_s_shape(kind, shape):
    model = build_model(kind, 5, shape)
    x = torch.rand(2, *shape)
    z = model.encode(x)
    assert z.shape == (2, 5)
    assert model(x).shape == x.shape


def test_the_3x32x32_model_s_parameter_counts():
    counts = count_params(ConvAutoencoder(100, (3, 32, 32)))
    # encoder: 3->32->64->128 convolutions (32->16->8->4), 128*4*4 -> 100
    encoder = (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 128 + 128) + (2048 * 100 + 100)
    decoder = (100 * 2048 + 2048) + (128 * 9 * 64 + 64) + (64 * 9 * 32 + 32) + (32 * 9 * 3 + 3)
    assert (counts.encoder, counts.decoder) == (encoder, decoder)
    assert count_params(LinearAutoencoder(10, (3, 32, 32))).total == 2 * 3072 * 10


def test_output_paddings_rebuild_every_encoder_size():
    assert halvings(28) == [28, 14, 7, 4] and output_paddings(28) == [0, 1, 1]
    assert halvings(32) == [32, 16, 8, 4] and output_paddings(32) == [1, 1, 1]
    assert halvings(8) == [8, 4, 2, 1]


@pytest.mark.parametrize("shape", [(1, 7, 28), (1, 28, 4), (4, 28, 28), (0, 28, 28)])
def test_shapes_the_model_cannot_take_are_refused(shape):
    with pytest.raises(ValueError, match="at least 8"):
        ConvAutoencoder(10, shape)
