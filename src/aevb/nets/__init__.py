"""Encoder and decoder networks. Each maps a batch to a flat vector of distribution parameters
(encoder) or from a latent vector to per-pixel parameters shaped like the input (decoder);
layer sizes are inferred from the input shape."""
from .conv import ConvDecoder, ConvEncoder
from .mlp import WIDTH, MLPDecoder, MLPEncoder, activation
from .resconv import ResConvDecoder, ResConvEncoder, SpatialResConvDecoder, SpatialResConvEncoder

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "ResConvEncoder", "ResConvDecoder",
           "activation", "build"]

NETS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder),
        "resconv": (ResConvEncoder, ResConvDecoder),
        "resconv_spatial": (SpatialResConvEncoder, SpatialResConvDecoder)}


def build(kind: str, input_shape, latent_params: int, latent_dim: int, out_channels: int,
          hidden=(400, 400), act: str = "relu", cond_dim: int = 0, out_bias=None):
    """(encoder, decoder) of architecture `kind`: the encoder outputs `latent_params` numbers
    per example, the decoder turns `latent_dim (+ cond_dim)` numbers into an image of
    `out_channels` channels and the input's height and width. `out_bias`: where the decoder
    can set its last bias (resconv), its start value per group of channels."""
    if kind not in NETS:
        raise ValueError(f"unknown network {kind!r}; choose one of {sorted(NETS)}")
    if act in WIDTH and kind != "mlp":
        raise ValueError(f"activation {act!r} is for net mlp (its layers are built twice as wide); "
                         f"with net {kind} use relu, elu or gelu")
    enc, dec = NETS[kind]
    return (enc(input_shape, latent_params, hidden, act, cond_dim),
            dec(input_shape, latent_dim + cond_dim, out_channels, hidden, act,
                **({"out_bias": out_bias} if kind.startswith("resconv") else {})))
