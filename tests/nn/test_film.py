import torch

from hcitools.nn import FiLM, GradientReversal


def test_film_is_identity_at_init_and_conditions_after():
    film = FiLM(3, 5)
    x, c = torch.randn(4, 5), torch.eye(3)[[0, 1, 2, 0]]
    assert torch.equal(film(x, c), x)
    torch.nn.init.normal_(film.gamma.weight)
    out = film(x, c)
    assert torch.allclose(out[0], out[0]) and not torch.allclose(out[0] / x[0], out[1] / x[1])
    expected = (1 + film.gamma(c)) * x + film.beta(c)
    assert torch.allclose(out, expected)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(6, 3, requires_grad=True)
    y = GradientReversal.apply(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.5 * torch.arange(3.0).expand(6, 3))
